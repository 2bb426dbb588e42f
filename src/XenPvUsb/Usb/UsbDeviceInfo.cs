namespace XenPvUsb.Usb;

/// <summary>What sysfs says about one USB device (/sys/bus/usb/devices/&lt;busid&gt;).</summary>
public sealed record UsbDeviceInfo(
    string BusId,
    int BusNum,
    int DevNum,
    ushort VendorId,
    ushort ProductId,
    byte DeviceClass,
    UsbSpeed Speed,
    int MaxChild,
    string? Manufacturer,
    string? Product,
    string? Serial)
{
    /// <summary>Hubs (class 9) cannot be passed through: PVUSB has no hub tiers behind a root port.</summary>
    public bool IsHub => DeviceClass == 9 || MaxChild > 0;

    /// <summary>Root hubs are named usbN in sysfs.</summary>
    public bool IsRootHub => BusId.StartsWith("usb", StringComparison.Ordinal);
}
