using System.Globalization;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using XenPvUsb.Host;
using XenPvUsb.Interop.Linux;
using XenPvUsb.Logging;
using XenPvUsb.Xen;

namespace XenPvUsb.Usb.Usbfs;

/// <summary>
/// The real <see cref="IUsbHost"/>: devices from sysfs, opened through usbfs
/// (/dev/bus/usb/BBB/DDD) with their hub port claimed, hotplug from kernel uevents on a netlink socket
/// watched by the <see cref="EventLoop"/> (host-interfaces.md §1, §2).
/// </summary>
/// <remarks>
/// <see cref="Hotplug"/> is raised on the event loop thread. A device is announced as added when
/// the kernel's generic USB driver has bound it ("bind" uevent, DEVTYPE=usb_device): by then the
/// device is configured, its interfaces exist and their drivers have probed, so opening it claims
/// them all. The earlier "add" uevent is too soon (the configuration is selected after it).
/// "unbind" and "remove" are announced as removed. When the kernel drops uevents (ENOBUFS) the host
/// compares what it announced with what sysfs shows and announces the difference.
///
/// Port claims (<see cref="PortClaims"/>) keep dom0's drivers off every device it opened, for as long as
/// the device is assigned: across SETCONFIGURATION, RESET and re-enumeration, and, through systemd's fd
/// store, across a restart of the daemon.
/// </remarks>
public sealed class UsbfsHost : IUsbHost, IDisposable
{
    private const int UeventBufferSize = 8192;

    /// <summary>What the uevent socket asks the kernel to queue: bursts (a hub with many devices) must not overflow.</summary>
    private const int UeventReceiveBuffer = 4 << 20;

    private readonly EventLoop _loop;
    private readonly string _sysfsRoot;
    private readonly string _devRoot;
    private readonly ILogger _logger;
    private readonly Func<string, IUsbfsFile> _openFile;
    private readonly TimeSpan _slowThreshold;
    private readonly PortClaims _claims;

    // Loop thread: last announced state per bus id; absent = never seen or removed.
    private readonly Dictionary<string, Announced> _announced = new(StringComparer.Ordinal);

    // Loop thread: the uevent count when each bus id last had one, so that a resync does not undo newer events.
    private readonly Dictionary<string, long> _lastUevent = new(StringComparer.Ordinal);
    private readonly UeventHandler? _uevents;
    private long _ueventCount;
    private bool _resyncRunning;
    private bool _resyncAgain;
    private volatile bool _disposed;

    /// <param name="loop">The daemon's event loop: usbfs and uevent fds are watched there.</param>
    /// <param name="sysfsRoot">Root of sysfs (tests point it at a fake tree).</param>
    /// <param name="devRoot">Where the usbfs nodes are.</param>
    /// <param name="logger">Null for no logging.</param>
    /// <param name="fdStore">Where port claims are kept across a restart (systemd's fd store); null for none.</param>
    public UsbfsHost(EventLoop loop, string sysfsRoot = "/sys", string devRoot = "/dev/bus/usb", ILogger? logger = null, IFdStore? fdStore = null)
        : this(loop, sysfsRoot, devRoot, logger, UsbfsFile.Open, hotplug: true, fdStore, UsbfsFile.Adopt)
    {
    }

    internal UsbfsHost(
        EventLoop loop,
        string sysfsRoot,
        string devRoot,
        ILogger? logger,
        Func<string, IUsbfsFile> openFile,
        bool hotplug,
        IFdStore? fdStore = null,
        Func<SafeHandle, IUsbfsFile>? adoptFile = null,
        TimeSpan parkTime = default,
        TimeSpan slowThreshold = default)
    {
        ArgumentNullException.ThrowIfNull(loop);
        ArgumentNullException.ThrowIfNull(sysfsRoot);
        ArgumentNullException.ThrowIfNull(devRoot);
        _loop = loop;
        _sysfsRoot = sysfsRoot;
        _devRoot = devRoot;
        _logger = logger ?? NullLogger.Instance;
        _openFile = openFile;
        _slowThreshold = slowThreshold;
        _claims = new PortClaims(fdStore ?? NullFdStore.Instance, sysfsRoot, devRoot, _logger, openFile, adoptFile ?? UsbfsFile.Adopt, parkTime, slowThreshold);
        // What is there now counts as announced: the daemon's own startup scan finds it through Enumerate.
        foreach ((string busId, int devNum) in ScanBound())
        {
            _announced[busId] = new Announced(true, devNum);
        }
        if (hotplug)
        {
            try
            {
                _uevents = new UeventHandler(this);
            }
            catch (IOException e)
            {
                _logger.HotplugUnavailable(e.Message);
            }
        }
    }

    public event Action<UsbHotplugEvent>? Hotplug;

    /// <summary>True if the uevent socket is open (hotplug events will be raised).</summary>
    public bool HotplugEnabled => _uevents is not null;

    /// <summary>Bus ids whose port claims the previous daemon left in the fd store and no Open took over yet.</summary>
    public IReadOnlyList<string> InheritedClaims => _claims.InheritedBusIds;

    internal PortClaims Claims => _claims;

    public IReadOnlyList<UsbDeviceInfo> Enumerate() => UsbSysfs.Enumerate(_sysfsRoot);

    public UsbDeviceInfo? Find(string busId) => UsbSysfs.IsValidBusId(busId) ? UsbSysfs.Read(_sysfsRoot, busId) : null;

    /// <summary>
    /// Claims the device's port on its parent hub (USBDEVFS_CLAIM_PORT, or the claim the previous daemon
    /// left for this bus id), then opens /dev/bus/usb/BBB/DDD (numbers from sysfs) and claims every
    /// interface of the active configuration, detaching kernel drivers. Hubs are refused: detaching a hub
    /// driver would disconnect everything behind it, and PVUSB has no hub tiers anyway. Blocks for the
    /// ioctls (a driver's disconnect runs in DISCONNECT_CLAIM): do not call it on the event loop thread.
    /// </summary>
    /// <exception cref="UsbDeviceException">Absent, a hub, its port owned by another program (EBUSY), or an interface busy.</exception>
    public IUsbHostDevice Open(string busId) => Open(busId, _loop);

    public IUsbHostDevice Open(string busId, EventLoop loop)
    {
        ArgumentNullException.ThrowIfNull(loop);
        if (!UsbSysfs.IsValidBusId(busId))
        {
            throw new UsbDeviceException($"Open {busId}: not a USB bus id (EINVAL)", UsbDevFs.EINVAL);
        }
        UsbDeviceInfo info = UsbSysfs.Read(_sysfsRoot, busId)
            ?? throw new UsbDeviceException($"Open {busId}: no such device (ENODEV)", UsbDevFs.ENODEV);
        if (info.IsRootHub || info.IsHub)
        {
            throw new UsbDeviceException($"Open {busId}: hubs cannot be passed through (EINVAL)", UsbDevFs.EINVAL);
        }

        // The port first, so that no dom0 driver can probe the device from here on.
        PortClaim claim = _claims.Acquire(info);
        string path = DevicePath(_devRoot, info.BusNum, info.DevNum);
        IUsbfsFile file;
        try
        {
            file = _openFile(path);
        }
        catch
        {
            claim.Release(null);
            throw;
        }
        try
        {
            // On failure the device gives the claim back itself, before reconnecting drivers.
            return new UsbfsDevice(file, loop, _sysfsRoot, info, path, _logger, claim, _slowThreshold);
        }
        catch
        {
            claim.Release(null);
            file.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Call once the daemon's startup scan has opened every device still assigned: every port claim the
    /// previous daemon left and nobody took over is released, and the device on it is given back to dom0's
    /// drivers (USBDEVFS_CONNECT on each interface, since nobody knows which had drivers; a device left
    /// unconfigured gets its first configuration). Each device on its own thread; completes when all are done.
    /// </summary>
    public Task HandBackInheritedClaimsAsync() => _claims.HandBackInheritedAsync();

    public Task HandBackAsync(string busId) =>
        UsbSysfs.IsValidBusId(busId) ? _claims.HandBackAsync(busId, "its controller's domain is gone") : Task.CompletedTask;

    /// <summary>
    /// Call when the daemon stops to be started again (systemctl restart, upgrade): from now on devices
    /// disposed keep their port claims in the fd store for the next daemon instead of going back to dom0.
    /// </summary>
    public void KeepClaimsForRestart() => _claims.KeepForRestart();

    /// <summary>The usbfs node of a device: &lt;devRoot&gt;/%03d/%03d (§1.1).</summary>
    public static string DevicePath(string devRoot, int busNum, int devNum)
        => Path.Combine(devRoot, busNum.ToString("D3", CultureInfo.InvariantCulture), devNum.ToString("D3", CultureInfo.InvariantCulture));

    /// <summary>Stops hotplug and closes the claims no open device holds (see <see cref="PortClaims.Dispose"/>). Open devices are not affected.</summary>
    public void Dispose()
    {
        _disposed = true;
        _uevents?.Dispose();
        _claims.Dispose();
    }

    /// <summary>Loop thread: turns one parsed uevent into at most two <see cref="Hotplug"/> events.</summary>
    internal void OnUevent(UsbUevent uevent)
    {
        _logger.HotplugUevent(uevent.Action, uevent.BusId);
        _lastUevent[uevent.BusId] = ++_ueventCount;
        bool known = _announced.TryGetValue(uevent.BusId, out Announced state);
        switch (uevent.Action)
        {
            case "bind":
                if (known && state.Present && state.DevNum != 0 && uevent.DevNum != 0 && state.DevNum != uevent.DevNum)
                {
                    // Another device at the same place: its predecessor's unbind and remove were lost.
                    Raise(uevent.BusId, added: false, uevent.Action);
                    known = false;
                }
                if (!known || !state.Present)
                {
                    _announced[uevent.BusId] = new Announced(true, uevent.DevNum);
                    Raise(uevent.BusId, added: true, uevent.Action);
                }
                break;
            case "unbind":
            case "remove":
                // An unplug sends unbind then remove: announce the first only.
                bool announce = !known || state.Present;
                if (uevent.Action == "remove")
                {
                    _announced.Remove(uevent.BusId);
                }
                else
                {
                    _announced[uevent.BusId] = new Announced(false, 0);
                }
                if (announce)
                {
                    Raise(uevent.BusId, added: false, uevent.Action);
                }
                break;
            default:
                break;
        }
    }

    /// <summary>
    /// Loop thread: the kernel dropped uevents (ENOBUFS). Reads sysfs off the loop, then announces on the loop
    /// what changed since the last announcements; bus ids that had a uevent meanwhile are left to it.
    /// </summary>
    internal void OnUeventOverflow()
    {
        _logger.HotplugOverflow();
        if (_resyncRunning)
        {
            _resyncAgain = true;
            return;
        }
        StartResync();
    }

    /// <summary>Completes when a resync in progress has announced its result (tests).</summary>
    internal Task<bool> ResyncIdleAsync() => _loop.InvokeAsync(() => !_resyncRunning);

    private void StartResync()
    {
        _resyncRunning = true;
        long since = _ueventCount;
        Task.Run(ScanBound).ContinueWith(
            scan =>
            {
                if (!_disposed)
                {
                    _loop.Post(() => FinishResync(scan, since));
                }
            },
            CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously,
            TaskScheduler.Default);
    }

    private void FinishResync(Task<Dictionary<string, int>> scan, long since)
    {
        _resyncRunning = false;
        if (!scan.IsCompletedSuccessfully)
        {
            _logger.HotplugResyncFailed(scan.Exception!);
        }
        else
        {
            Dictionary<string, int> now = scan.Result;
            int added = 0;
            int removed = 0;
            foreach ((string busId, Announced state) in _announced.ToArray())
            {
                if (!state.Present || UeventSince(busId, since))
                {
                    continue;
                }
                if (!now.TryGetValue(busId, out int devNum) || (state.DevNum != 0 && devNum != state.DevNum))
                {
                    _announced.Remove(busId);
                    Raise(busId, added: false, "resync");
                    removed++;
                }
            }
            foreach ((string busId, int devNum) in now)
            {
                if (UeventSince(busId, since) || (_announced.TryGetValue(busId, out Announced state) && state.Present))
                {
                    continue;
                }
                _announced[busId] = new Announced(true, devNum);
                Raise(busId, added: true, "resync");
                added++;
            }
            _logger.HotplugResynced(added, removed);
        }
        if (_resyncAgain)
        {
            _resyncAgain = false;
            StartResync();
        }
    }

    private bool UeventSince(string busId, long since) => _lastUevent.TryGetValue(busId, out long at) && at > since;

    private void Raise(string busId, bool added, string action)
    {
        if (added)
        {
            _logger.HotplugArrived(busId, action);
        }
        else
        {
            _logger.HotplugLeft(busId, action);
        }
        Hotplug?.Invoke(new UsbHotplugEvent(busId, added));
    }

    /// <summary>Devices sysfs lists with a driver bound (the generic "usb" driver binds every device it configures), by bus id, with their device numbers.</summary>
    private Dictionary<string, int> ScanBound()
    {
        var bound = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (UsbDeviceInfo info in UsbSysfs.Enumerate(_sysfsRoot))
        {
            if (new FileInfo(Path.Combine(_sysfsRoot, "bus", "usb", "devices", info.BusId, "driver")).LinkTarget is not null)
            {
                bound[info.BusId] = info.DevNum;
            }
        }
        return bound;
    }

    private readonly record struct Announced(bool Present, int DevNum);

    /// <summary>The netlink uevent socket, registered with the loop for EPOLLIN.</summary>
    private sealed class UeventHandler : IEventHandler, IDisposable
    {
        private readonly UsbfsHost _host;
        private readonly SafeNetlinkHandle _socket;
        private readonly byte[] _buffer = new byte[UeventBufferSize];
        private long _registration;
        private bool _refAdded;

        public UeventHandler(UsbfsHost host)
        {
            _host = host;
            _socket = SafeNetlinkHandle.OpenUevent();
            try
            {
                int refused = Netlink.SetReceiveBuffer(_socket, UeventReceiveBuffer, out int granted);
                if (refused == 0)
                {
                    host._logger.HotplugReceiveBufferForced(granted);
                }
                else
                {
                    host._logger.HotplugReceiveBufferLimited(granted, refused);
                }
                _socket.DangerousAddRef(ref _refAdded);
                _registration = host._loop.Register((int)_socket.DangerousGetHandle(), this, EventLoop.EpollIn);
            }
            catch
            {
                Dispose();
                throw;
            }
        }

        public void OnEvent(uint events)
        {
            while (_registration != 0)
            {
                int n = Netlink.Receive(_socket, _buffer, out uint senderPid);
                if (n == -UsbDevFs.EAGAIN)
                {
                    return;
                }
                if (n == -UsbDevFs.EINTR)
                {
                    continue;
                }
                if (n == -UsbDevFs.ENOBUFS)
                {
                    // The queue overflowed and events are lost; what is still queued comes next.
                    _host.OnUeventOverflow();
                    continue;
                }
                if (n < 0)
                {
                    _host._logger.HotplugReceiveFailed(-n);
                    Unregister();
                    return;
                }
                // Only the kernel (port id 0) speaks on group 1; anything else is ignored (libusb does the same).
                if (senderPid == 0 && UsbUevent.TryParse(_buffer.AsSpan(0, n), out UsbUevent uevent))
                {
                    _host.OnUevent(uevent);
                }
            }
        }

        public void Dispose() => LoopSync.Run(_host._loop, () =>
        {
            Unregister();
            _socket.Dispose();
        });

        private void Unregister()
        {
            if (_registration != 0)
            {
                _host._loop.Unregister(_registration, (int)_socket.DangerousGetHandle());
                _registration = 0;
            }
            if (_refAdded)
            {
                _refAdded = false;
                _socket.DangerousRelease();
            }
        }
    }
}
