using XenPvUsb.Usb;
using static XenPvUsb.Usbif.Usbif;

namespace XenPvUsb.Backend;

/// <summary>Which usbif speed a host device is presented at on a controller of a given USB version.</summary>
public static class VusbSpeed
{
    /// <summary>
    /// Low and full speed go as they are; high speed needs a USB 2.0 controller; SuperSpeed devices are
    /// presented at high speed (usbif has no SuperSpeed, and most USB 3 devices fall back to 2.0
    /// behaviour). Returns USBIF_SPEED_NONE when the device cannot be served on this controller.
    /// </summary>
    public static byte ToWire(UsbSpeed speed, int usbVersion) => speed switch
    {
        UsbSpeed.Low => USBIF_SPEED_LOW,
        UsbSpeed.Full => USBIF_SPEED_FULL,
        UsbSpeed.High or UsbSpeed.Super or UsbSpeed.SuperPlus when usbVersion >= USB_VER_USB20 => USBIF_SPEED_HIGH,
        _ => USBIF_SPEED_NONE,
    };
}
