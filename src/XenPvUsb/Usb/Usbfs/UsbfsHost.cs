using System.Globalization;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using XenPvUsb.Host;
using XenPvUsb.Interop.Linux;
using XenPvUsb.Logging;
using XenPvUsb.Xen;

namespace XenPvUsb.Usb.Usbfs;

/// <summary>
/// The real <see cref="IUsbHost"/>: devices from sysfs, opened through usbfs
/// (/dev/bus/usb/BBB/DDD), hotplug from kernel uevents on a netlink socket watched by the
/// <see cref="EventLoop"/> (host-interfaces.md §1, §2).
/// </summary>
/// <remarks>
/// <see cref="Hotplug"/> is raised on the event loop thread. A device is announced as added when
/// the kernel's generic USB driver has bound it ("bind" uevent, DEVTYPE=usb_device): by then the
/// device is configured, its interfaces exist and their drivers have probed, so opening it claims
/// them all. The earlier "add" uevent is too soon (the configuration is selected after it).
/// "unbind" and "remove" are announced as removed.
/// </remarks>
public sealed class UsbfsHost : IUsbHost, IDisposable
{
    private const int UeventBufferSize = 8192;

    private readonly EventLoop _loop;
    private readonly string _sysfsRoot;
    private readonly string _devRoot;
    private readonly ILogger _logger;
    private readonly Func<string, IUsbfsFile> _openFile;
    // Last announced state per bus id (true = added); absent = never announced or removed.
    private readonly Dictionary<string, bool> _present = new(StringComparer.Ordinal);
    private readonly UeventHandler? _uevents;

    /// <param name="loop">The daemon's event loop: usbfs and uevent fds are watched there.</param>
    /// <param name="sysfsRoot">Root of sysfs (tests point it at a fake tree).</param>
    /// <param name="devRoot">Where the usbfs nodes are.</param>
    /// <param name="logger">Null for no logging.</param>
    public UsbfsHost(EventLoop loop, string sysfsRoot = "/sys", string devRoot = "/dev/bus/usb", ILogger? logger = null)
        : this(loop, sysfsRoot, devRoot, logger, UsbfsFile.Open, hotplug: true)
    {
    }

    internal UsbfsHost(EventLoop loop, string sysfsRoot, string devRoot, ILogger? logger, Func<string, IUsbfsFile> openFile, bool hotplug)
    {
        ArgumentNullException.ThrowIfNull(loop);
        ArgumentNullException.ThrowIfNull(sysfsRoot);
        ArgumentNullException.ThrowIfNull(devRoot);
        _loop = loop;
        _sysfsRoot = sysfsRoot;
        _devRoot = devRoot;
        _logger = logger ?? NullLogger.Instance;
        _openFile = openFile;
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

    public IReadOnlyList<UsbDeviceInfo> Enumerate() => UsbSysfs.Enumerate(_sysfsRoot);

    public UsbDeviceInfo? Find(string busId) => UsbSysfs.IsValidBusId(busId) ? UsbSysfs.Read(_sysfsRoot, busId) : null;

    /// <summary>
    /// Opens /dev/bus/usb/BBB/DDD (numbers from sysfs) and claims every interface of the active
    /// configuration, detaching kernel drivers. Hubs are refused: detaching a hub driver would
    /// disconnect everything behind it, and PVUSB has no hub tiers anyway.
    /// </summary>
    public IUsbHostDevice Open(string busId)
    {
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

        string path = DevicePath(_devRoot, info.BusNum, info.DevNum);
        IUsbfsFile file = _openFile(path);
        try
        {
            return new UsbfsDevice(file, _loop, _sysfsRoot, info, path, _logger);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <summary>The usbfs node of a device: &lt;devRoot&gt;/%03d/%03d (§1.1).</summary>
    public static string DevicePath(string devRoot, int busNum, int devNum)
        => Path.Combine(devRoot, busNum.ToString("D3", CultureInfo.InvariantCulture), devNum.ToString("D3", CultureInfo.InvariantCulture));

    /// <summary>Stops hotplug. Open devices are not affected (dispose them separately).</summary>
    public void Dispose() => _uevents?.Dispose();

    /// <summary>Loop thread: turns one parsed uevent into at most one <see cref="Hotplug"/> event.</summary>
    internal void OnUevent(UsbUevent uevent)
    {
        _logger.HotplugUevent(uevent.Action, uevent.BusId);
        switch (uevent.Action)
        {
            case "bind":
                if (!_present.TryGetValue(uevent.BusId, out bool present) || !present)
                {
                    _present[uevent.BusId] = true;
                    _logger.HotplugArrived(uevent.BusId, uevent.Action);
                    Hotplug?.Invoke(new UsbHotplugEvent(uevent.BusId, Added: true));
                }
                break;
            case "unbind":
            case "remove":
                // An unplug sends unbind then remove: announce the first only.
                bool announce = !_present.TryGetValue(uevent.BusId, out bool wasPresent) || wasPresent;
                if (uevent.Action == "remove")
                {
                    _present.Remove(uevent.BusId);
                }
                else
                {
                    _present[uevent.BusId] = false;
                }
                if (announce)
                {
                    _logger.HotplugLeft(uevent.BusId, uevent.Action);
                    Hotplug?.Invoke(new UsbHotplugEvent(uevent.BusId, Added: false));
                }
                break;
            default:
                break;
        }
    }

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
                    _host._logger.HotplugOverflow();
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
