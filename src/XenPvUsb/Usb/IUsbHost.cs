namespace XenPvUsb.Usb;

/// <summary>The host's USB world: enumeration, claiming and hotplug. Real: sysfs + usbfs + uevents. Simulated: emulated devices.</summary>
public interface IUsbHost
{
    /// <summary>Every USB device present now, root hubs and hubs included.</summary>
    IReadOnlyList<UsbDeviceInfo> Enumerate();

    /// <summary>The device at a bus id (e.g. "1-2.3"), or null if none is plugged there.</summary>
    UsbDeviceInfo? Find(string busId);

    /// <summary>Opens and claims the device at a bus id. Throws <see cref="UsbDeviceException"/> if absent or busy.</summary>
    IUsbHostDevice Open(string busId);

    /// <summary>
    /// As <see cref="Open(string)"/>, for a controller that lives on <paramref name="loop"/>: a device with its own
    /// event-loop work (usbfs) is driven from that loop, so submissions and completions stay on one thread.
    /// </summary>
    IUsbHostDevice Open(string busId, Xen.EventLoop loop) => Open(busId);

    /// <summary>
    /// Gives the device at a bus id, which no controller serves, back to the host's drivers: for the devices of
    /// a stale controller whose domain died while no daemon ran (its predecessor closed them without hand-back).
    /// A device open here now is left alone.
    /// </summary>
    Task HandBackAsync(string busId);

    /// <summary>A device appeared at or vanished from a bus id. Raised on any thread.</summary>
    event Action<UsbHotplugEvent>? Hotplug;
}

public readonly record struct UsbHotplugEvent(string BusId, bool Added);
