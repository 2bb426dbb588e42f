using XenPvUsb.Usb;

namespace XenPvUsb.Simulation.Devices;

/// <summary>
/// A USB host that hands out the devices of another one, wrapped where a wrapper is set for their bus
/// id (a slow or misbehaving device for tests and the benchmark).
/// </summary>
public sealed class DecoratingUsbHost : IUsbHost
{
    private readonly IUsbHost _inner;
    private readonly Dictionary<string, Func<IUsbHostDevice, IUsbHostDevice>> _wrappers = new(StringComparer.Ordinal);
    private readonly Lock _lock = new();
    private readonly List<string> _handedBack = new();

    public DecoratingUsbHost(IUsbHost inner)
    {
        _inner = inner;
    }

    public event Action<UsbHotplugEvent>? Hotplug
    {
        add => _inner.Hotplug += value;
        remove => _inner.Hotplug -= value;
    }

    /// <summary>Every later open of <paramref name="busId"/> returns <paramref name="wrap"/>(the real device).</summary>
    public void Wrap(string busId, Func<IUsbHostDevice, IUsbHostDevice> wrap)
    {
        lock (_lock)
        {
            _wrappers[busId] = wrap;
        }
    }

    public IReadOnlyList<UsbDeviceInfo> Enumerate() => _inner.Enumerate();

    /// <summary>Bus ids the backend asked to give back to the host's drivers (tests).</summary>
    public IReadOnlyList<string> HandedBack
    {
        get
        {
            lock (_lock)
            {
                return [.. _handedBack];
            }
        }
    }

    public Task HandBackAsync(string busId)
    {
        lock (_lock)
        {
            _handedBack.Add(busId);
        }
        return _inner.HandBackAsync(busId);
    }

    public UsbDeviceInfo? Find(string busId) => _inner.Find(busId);

    public IUsbHostDevice Open(string busId) => Wrap(busId, _inner.Open(busId));

    public IUsbHostDevice Open(string busId, XenPvUsb.Xen.EventLoop loop) => Wrap(busId, _inner.Open(busId, loop));

    private IUsbHostDevice Wrap(string busId, IUsbHostDevice device)
    {
        Func<IUsbHostDevice, IUsbHostDevice>? wrap;
        lock (_lock)
        {
            _wrappers.TryGetValue(busId, out wrap);
        }
        return wrap is null ? device : wrap(device);
    }
}
