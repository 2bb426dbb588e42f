using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using XenPvUsb.Host;
using XenPvUsb.Logging;
using static XenPvUsb.Interop.Linux.UsbDevFs;

namespace XenPvUsb.Usb.Usbfs;

/// <summary>
/// The port claims of one <see cref="UsbfsHost"/>, by bus id: taken when a device is opened, handed from
/// one daemon to the next through systemd's fd store, kept while a device re-enumerates, and given back.
/// </summary>
/// <remarks>
/// Lock: <c>_lock</c> guards the dictionary and every claim's State and ParkTimer; no ioctl, fd store message
/// or log call is made while it is held. Claims are kept per bus id, not per open device, because the
/// kernel ties a claim to the port: a device that leaves and comes back (re-enumeration, a reset that
/// changed its descriptors) must find its port still claimed, and a restarted daemon finds the claims of
/// the one before in the fd store (CLAIM_PORT again would fail with EBUSY: the old fd still owns the port).
/// </remarks>
internal sealed class PortClaims : IDisposable
{
    /// <summary>FDNAME prefix: "xenpvusb-port-3-1.4" claims the port of device 3-1.4 (bus ids have no ':').</summary>
    public const string FdNamePrefix = "xenpvusb-port-";

    /// <summary>How long the port of a device that went away stays claimed, waiting for it to come back.</summary>
    public static readonly TimeSpan DefaultParkTime = TimeSpan.FromSeconds(30);

    private readonly Lock _lock = new();
    private readonly Dictionary<string, PortClaim> _claims = new(StringComparer.Ordinal);
    private readonly IFdStore _store;
    private readonly string _sysfsRoot;
    private readonly string _devRoot;
    private readonly ILogger _logger;
    private readonly Func<string, IUsbfsFile> _openFile;
    private readonly TimeSpan _parkTime;
    private readonly TimeSpan _slowThreshold;
    private bool _keepForRestart;
    private bool _disposed;

    public PortClaims(IFdStore store, string sysfsRoot, string devRoot, ILogger logger, Func<string, IUsbfsFile> openFile, Func<SafeHandle, IUsbfsFile> adoptFile, TimeSpan parkTime, TimeSpan slowThreshold)
    {
        _store = store;
        _sysfsRoot = sysfsRoot;
        _devRoot = devRoot;
        _logger = logger;
        _openFile = openFile;
        _parkTime = parkTime > TimeSpan.Zero ? parkTime : DefaultParkTime;
        _slowThreshold = slowThreshold;
        AdoptInherited(adoptFile);
    }

    /// <summary>True once <see cref="KeepForRestart"/> was called: devices disposed from then on keep their claims.</summary>
    public bool KeepingForRestart
    {
        get
        {
            lock (_lock)
            {
                return _keepForRestart;
            }
        }
    }

    /// <summary>Bus ids whose claims the previous daemon left and nobody took over yet.</summary>
    public IReadOnlyList<string> InheritedBusIds
    {
        get
        {
            lock (_lock)
            {
                var ids = new List<string>();
                foreach (PortClaim c in _claims.Values)
                {
                    if (c.State == PortClaimState.Inherited)
                    {
                        ids.Add(c.BusId);
                    }
                }
                ids.Sort(Host.UsbSysfs.CompareBusIds);
                return ids;
            }
        }
    }

    /// <summary>The state of the claim for a bus id, or null if there is none (tests, diagnostics).</summary>
    public PortClaimState? StateOf(string busId)
    {
        lock (_lock)
        {
            return _claims.TryGetValue(busId, out PortClaim? c) ? c.State : null;
        }
    }

    /// <summary>
    /// The claim for <paramref name="device"/>'s port: one this host already holds for the bus id (inherited
    /// from the previous daemon, or kept while the device was away), else a new CLAIM_PORT on the parent hub.
    /// Blocks briefly (opening the hub's node, one ioctl). Throws <see cref="UsbDeviceException"/>: EBUSY when
    /// another program owns the port or the bus id is open already.
    /// </summary>
    public PortClaim Acquire(UsbDeviceInfo device)
    {
        string busId = device.BusId;
        if (!UsbfsHandBack.TryGetParentPort(busId, out string hubBusId, out int port))
        {
            throw new UsbDeviceException($"Open {busId}: not a device behind a hub port (EINVAL)", EINVAL);
        }
        PortClaim? adopted = null;
        string how = "";
        lock (_lock)
        {
            if (_claims.TryGetValue(busId, out PortClaim? existing))
            {
                switch (existing.State)
                {
                    case PortClaimState.Inherited:
                    case PortClaimState.Parked:
                    case PortClaimState.Kept:
                        how = existing.State == PortClaimState.Inherited ? "left by the previous daemon" : "kept while the device was away";
                        existing.ParkTimer?.Dispose();
                        existing.ParkTimer = null;
                        // One object per holder: the old device, whose worker may still be busy, can no longer
                        // park or release what its successor holds now.
                        existing.State = PortClaimState.Released;
                        existing.MarkReleased();
                        adopted = new PortClaim(this, busId, existing.HubBusId, existing.Port, existing.Hub, PortClaimState.Held);
                        _claims[busId] = adopted;
                        break;
                    case PortClaimState.HandingBack:
                        throw new UsbDeviceException($"Open {busId}: it is being handed back to dom0 (EBUSY)", EBUSY);
                    default:
                        throw new UsbDeviceException($"Open {busId}: already open (EBUSY)", EBUSY);
                }
            }
        }
        if (adopted is not null)
        {
            _logger.UsbfsPortClaimAdopted(busId, how);
            return adopted;
        }

        UsbDeviceInfo hub = Host.UsbSysfs.Read(_sysfsRoot, hubBusId)
            ?? throw new UsbDeviceException($"Open {busId}: its hub {hubBusId} is not in sysfs (ENODEV)", ENODEV);
        string path = UsbfsHost.DevicePath(_devRoot, hub.BusNum, hub.DevNum);
        IUsbfsFile file = _openFile(path);
        int rc = file.ClaimPort(port);
        if (rc < 0)
        {
            file.Dispose();
            throw new UsbDeviceException(rc == -EBUSY
                ? $"Open {busId}: port {port} of hub {hubBusId} ({path}) is claimed by another program (EBUSY), which owns the device"
                : $"Open {busId}: cannot claim port {port} of hub {hubBusId} ({path}): errno {-rc}", -rc);
        }
        var claim = new PortClaim(this, busId, hubBusId, port, file, PortClaimState.Held);
        lock (_lock)
        {
            // A second Open racing this one failed CLAIM_PORT with EBUSY: the kernel allows one owner per port.
            _claims[busId] = claim;
        }
        _logger.UsbfsPortClaimed(busId, port, hubBusId);
        int stored = _store.Add(claim.FdName, file.Handle);
        if (stored < 0)
        {
            _logger.UsbfsFdStoreFailed(busId, "FDSTORE", -stored);
        }
        return claim;
    }

    /// <summary>See <see cref="PortClaim.Release"/>.</summary>
    public void Release(PortClaim claim, UsbfsWorker? worker)
    {
        if (!claim.MarkReleased())
        {
            return;
        }
        lock (_lock)
        {
            if (_claims.TryGetValue(claim.BusId, out PortClaim? c) && c == claim)
            {
                _claims.Remove(claim.BusId);
            }
            claim.State = PortClaimState.Released;
            claim.ParkTimer?.Dispose();
            claim.ParkTimer = null;
        }
        worker?.Step("RELEASE_PORT", claim.Port);
        int rc = claim.Hub.ReleasePort(claim.Port);
        _logger.UsbfsPortReleased(claim.BusId, claim.Port, claim.HubBusId, rc);
        if (rc < 0 && rc != -ENODEV)
        {
            _logger.UsbfsHandBackFailed(claim.BusId, "RELEASE_PORT", -rc);
        }
        int removed = _store.Remove(claim.FdName);
        if (removed < 0)
        {
            _logger.UsbfsFdStoreFailed(claim.BusId, "FDSTOREREMOVE", -removed);
        }
        claim.Hub.Dispose();
    }

    /// <summary>See <see cref="PortClaim.Park"/>. With <paramref name="forSuccessor"/> the claim is kept for the next daemon, with no deadline.</summary>
    public void Park(PortClaim claim, bool forSuccessor = false)
    {
        bool kept;
        lock (_lock)
        {
            if (claim.State != PortClaimState.Held)
            {
                return;
            }
            kept = forSuccessor || _keepForRestart || _disposed;
            claim.State = kept ? PortClaimState.Kept : PortClaimState.Parked;
            if (!kept)
            {
                claim.ParkTimer = new Timer(static s => ((PortClaim)s!).Registry.OnParkExpired((PortClaim)s!), claim, _parkTime, Timeout.InfiniteTimeSpan);
            }
        }
        if (kept)
        {
            _logger.UsbfsPortClaimKept(claim.BusId);
        }
        else
        {
            _logger.UsbfsPortClaimParked(claim.BusId, (int)_parkTime.TotalSeconds);
        }
    }

    /// <summary>
    /// Gives back every claim inherited from the previous daemon that no Open took over: the port is
    /// released, then the device there (if any) gets dom0's drivers again. Each on its own worker; the task
    /// completes when all are done.
    /// </summary>
    public Task HandBackInheritedAsync()
    {
        var claims = new List<PortClaim>();
        lock (_lock)
        {
            foreach (PortClaim c in _claims.Values)
            {
                if (c.State == PortClaimState.Inherited)
                {
                    c.State = PortClaimState.HandingBack;
                    claims.Add(c);
                }
            }
        }
        var tasks = new Task[claims.Count];
        for (int i = 0; i < claims.Count; i++)
        {
            tasks[i] = StartHandBack(claims[i], "nobody took it over after the restart");
        }
        return Task.WhenAll(tasks);
    }

    /// <summary>From now on, claims of devices disposed are kept (in the fd store) for the next daemon instead of given back.</summary>
    public void KeepForRestart()
    {
        var kept = new List<string>();
        lock (_lock)
        {
            _keepForRestart = true;
            foreach (PortClaim c in _claims.Values)
            {
                if (c.State == PortClaimState.Parked)
                {
                    c.State = PortClaimState.Kept;
                    c.ParkTimer?.Dispose();
                    c.ParkTimer = null;
                    kept.Add(c.BusId);
                }
            }
        }
        foreach (string busId in kept)
        {
            _logger.UsbfsPortClaimKept(busId);
        }
    }

    /// <summary>
    /// Closes the fds of claims no device holds, without releasing them: with the fd store systemd's copy
    /// keeps them claimed for the next daemon; without, the close releases them (devio.c usbdev_release).
    /// Claims of open devices stay with their devices.
    /// </summary>
    public void Dispose()
    {
        var closing = new List<PortClaim>();
        lock (_lock)
        {
            _disposed = true;
            foreach (PortClaim c in _claims.Values)
            {
                if (c.State is PortClaimState.Inherited or PortClaimState.Parked or PortClaimState.Kept)
                {
                    c.ParkTimer?.Dispose();
                    c.ParkTimer = null;
                    c.State = PortClaimState.Released;
                    closing.Add(c);
                }
            }
            foreach (PortClaim c in closing)
            {
                _claims.Remove(c.BusId);
            }
        }
        foreach (PortClaim c in closing)
        {
            c.MarkReleased();
            c.Hub.Dispose();
        }
    }

    private void OnParkExpired(PortClaim claim)
    {
        lock (_lock)
        {
            if (claim.State != PortClaimState.Parked)
            {
                return;
            }
            claim.State = PortClaimState.HandingBack;
            claim.ParkTimer?.Dispose();
            claim.ParkTimer = null;
        }
        _ = StartHandBack(claim, "it did not come back in time");
    }

    private Task StartHandBack(PortClaim claim, string reason)
    {
        var worker = new UsbfsWorker(claim.BusId, _logger, _slowThreshold);
        worker.PostLast(new HandBackWork(this, claim, claim.BusId, reason));
        return worker.Completion;
    }

    /// <summary>
    /// Gives a device no controller serves back to dom0's drivers (a stale controller's, removed at start-up):
    /// an inherited claim of its port is released first; a port someone holds now is left alone.
    /// </summary>
    public Task HandBackAsync(string busId, string reason)
    {
        PortClaim? inherited = null;
        lock (_lock)
        {
            if (_claims.TryGetValue(busId, out PortClaim? c))
            {
                if (c.State != PortClaimState.Inherited)
                {
                    return Task.CompletedTask; // held by an open device, or already on its way back
                }
                c.State = PortClaimState.HandingBack;
                inherited = c;
            }
        }
        if (inherited is not null)
        {
            return StartHandBack(inherited, reason);
        }
        var worker = new UsbfsWorker(busId, _logger, _slowThreshold);
        worker.PostLast(new HandBackWork(this, null, busId, reason));
        return worker.Completion;
    }

    private void HandBack(PortClaim? claim, string busId, string reason, UsbfsWorker worker)
    {
        if (claim is not null)
        {
            Release(claim, worker);
        }
        UsbDeviceInfo? info = Host.UsbSysfs.Read(_sysfsRoot, busId);
        if (info is null || info.IsHub)
        {
            _logger.UsbfsHandedBack(busId, reason + "; no device there now", 0);
            return;
        }
        IUsbfsFile file;
        try
        {
            worker.Step("open", info.DevNum);
            file = _openFile(UsbfsHost.DevicePath(_devRoot, info.BusNum, info.DevNum));
        }
        catch (UsbDeviceException e)
        {
            _logger.UsbfsHandBackFailed(busId, "open", e.Errno);
            return;
        }
        using (file)
        {
            int bound = Math.Max(0, UsbfsHandBack.Reattach(file, _sysfsRoot, busId, null, worker, _logger));
            worker.Step("close");
            _logger.UsbfsHandedBack(busId, reason, bound);
        }
    }

    private void AdoptInherited(Func<SafeHandle, IUsbfsFile> adoptFile)
    {
        foreach (InheritedFd fd in _store.TakeInherited(FdNamePrefix))
        {
            string busId = fd.Name[FdNamePrefix.Length..];
            if (!UsbfsHandBack.TryGetParentPort(busId, out string hubBusId, out int port))
            {
                fd.Handle.Dispose();
                _store.Remove(fd.Name);
                _logger.UsbfsPortClaimStale(fd.Name, "not a device bus id");
                continue;
            }
            lock (_lock)
            {
                if (_claims.ContainsKey(busId))
                {
                    // A second copy under the same name owns nothing: the kernel allows one owner per port.
                    fd.Handle.Dispose();
                    continue;
                }
            }
            IUsbfsFile file = adoptFile(fd.Handle);
            UsbDeviceInfo? hub = Host.UsbSysfs.Read(_sysfsRoot, hubBusId);
            // CONNINFO_EX says which device the fd is: a hub that re-enumerated since is another device, and the old fd is dead.
            int rc = file.GetConnInfo(out int busNum, out int devNum);
            if (hub is null || (rc == 0 && (busNum != hub.BusNum || devNum != hub.DevNum)))
            {
                file.Dispose();
                _store.Remove(fd.Name);
                _logger.UsbfsPortClaimHubChanged(fd.Name, hubBusId);
                continue;
            }
            lock (_lock)
            {
                _claims[busId] = new PortClaim(this, busId, hubBusId, port, file, PortClaimState.Inherited);
            }
            _logger.UsbfsPortClaimInherited(busId, port, hubBusId);
        }
    }

    private sealed class HandBackWork(PortClaims registry, PortClaim? claim, string busId, string reason) : IUsbfsWork
    {
        public void Run(UsbfsWorker worker) => registry.HandBack(claim, busId, reason, worker);
    }
}
