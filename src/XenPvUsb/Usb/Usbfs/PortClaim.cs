namespace XenPvUsb.Usb.Usbfs;

/// <summary>Where a <see cref="PortClaim"/> is in its life (host-side, guarded by <see cref="PortClaims"/>' lock).</summary>
internal enum PortClaimState
{
    /// <summary>An open device owns it.</summary>
    Held,

    /// <summary>Left by the previous daemon in systemd's fd store; waits for an Open or the hand-back after the startup scan.</summary>
    Inherited,

    /// <summary>Its device went away while open; kept for a while so that a device re-enumerating there gets no dom0 driver.</summary>
    Parked,

    /// <summary>The daemon is stopping: kept claimed for the next instance (fd store).</summary>
    Kept,

    /// <summary>Being given back to dom0 on a worker.</summary>
    HandingBack,

    /// <summary>Released; the hub fd is closed.</summary>
    Released,
}

/// <summary>
/// USBDEVFS_CLAIM_PORT held on the port of the hub a device hangs off, through an fd of that hub's usbfs
/// node: while it is held the kernel binds no interface driver to whatever device is on that port
/// (driver.c usb_probe_interface refuses when usb_device_is_owned), including after a RESET or a SETCONFIGURATION
/// and when the device re-enumerates, and it does not configure a device that enumerates there (generic.c).
/// The fd is also in systemd's fd store under <see cref="FdName"/>, so the claim outlives a daemon restart.
/// Each holder gets its own object: when an Open takes a kept claim over, a new object carries the hub fd on
/// and the old one is spent, so a late Park or Release from the previous holder does nothing.
/// </summary>
internal sealed class PortClaim
{
    private int _released;

    internal PortClaim(PortClaims registry, string busId, string hubBusId, int port, IUsbfsFile hub, PortClaimState state)
    {
        Registry = registry;
        BusId = busId;
        HubBusId = hubBusId;
        Port = port;
        Hub = hub;
        State = state;
    }

    public PortClaims Registry { get; }

    /// <summary>The device's bus id, e.g. "3-1.4".</summary>
    public string BusId { get; }

    /// <summary>The hub it hangs off, e.g. "3-1", or "usb3" for a root port.</summary>
    public string HubBusId { get; }

    /// <summary>1-based port number on that hub.</summary>
    public int Port { get; }

    /// <summary>The name in systemd's fd store: tells the next daemon which bus id the fd claims.</summary>
    public string FdName => PortClaims.FdNamePrefix + BusId;

    internal IUsbfsFile Hub { get; }

    /// <summary>Guarded by the registry's lock.</summary>
    internal PortClaimState State { get; set; }

    /// <summary>Guarded by the registry's lock.</summary>
    internal Timer? ParkTimer { get; set; }

    /// <summary>Sets the released flag; true for the one caller that gets to release.</summary>
    internal bool MarkReleased() => Interlocked.Exchange(ref _released, 1) == 0;

    /// <summary>
    /// Gives the port back: RELEASE_PORT, out of the fd store, hub fd closed. Idempotent. Blocks (an ioctl
    /// under the hub's device lock): call it from a worker or from Open's caller, never from the loop.
    /// </summary>
    public void Release(UsbfsWorker? worker) => Registry.Release(this, worker);

    /// <summary>The device went away while held (or the daemon is stopping): keep the claim for the next Open of this bus id.</summary>
    public void Park() => Registry.Park(this);

    /// <summary>Keeps the claim (fd store) for the next daemon, which takes it over; no deadline.</summary>
    public void KeepForSuccessor() => Registry.Park(this, forSuccessor: true);
}
