namespace XenPvUsb.Usb;

/// <summary>Transfer type; the numbering of USBDEVFS_URB_TYPE_* and of usbif pipe bits 30-31.</summary>
public enum UsbTransferType : byte
{
    Isochronous = 0,
    Interrupt = 1,
    Control = 2,
    Bulk = 3,
}
