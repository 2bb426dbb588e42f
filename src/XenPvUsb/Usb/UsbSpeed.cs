namespace XenPvUsb.Usb;

/// <summary>Linux enum usb_device_speed (linux/usb/ch9.h), as returned by USBDEVFS_GET_SPEED.</summary>
public enum UsbSpeed
{
    Unknown = 0,
    Low = 1,
    Full = 2,
    High = 3,
    Wireless = 4,
    Super = 5,
    SuperPlus = 6,
}
