namespace XenPvUsb.Host;

/// <summary>One interface of a device's active configuration, as sysfs shows it (host-interfaces.md §2.3).</summary>
/// <param name="Number">bInterfaceNumber.</param>
/// <param name="AlternateSetting">bAlternateSetting currently selected.</param>
/// <param name="InterfaceClass">bInterfaceClass.</param>
/// <param name="Driver">Name of the bound driver ("usbfs" when claimed through usbfs), or null if none.</param>
/// <param name="SubClass">bInterfaceSubClass.</param>
/// <param name="Protocol">bInterfaceProtocol.</param>
public sealed record UsbInterfaceInfo(int Number, int AlternateSetting, byte InterfaceClass, string? Driver, byte SubClass = 0, byte Protocol = 0);
