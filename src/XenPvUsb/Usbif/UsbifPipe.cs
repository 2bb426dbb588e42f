using XenPvUsb.Usb;
using static XenPvUsb.Usbif.Usbif;

namespace XenPvUsb.Usbif;

/// <summary>Decoded view of a usbif pipe word (usbif.h "USB pipe in usbif_request").</summary>
public readonly record struct UsbifPipe(uint Value)
{
    /// <summary>Bits that usbif.h leaves undefined (6 and 19-29); they must be zero.</summary>
    public const uint ReservedMask = 0x40u | 0x3FF80000u;

    public int Port => (int)(Value & USBIF_PIPE_PORT_MASK);

    public bool IsUnlink => (Value & USBIF_PIPE_UNLINK) != 0;

    public bool IsIn => (Value & USBIF_PIPE_DIR) != 0;

    public int Device => (int)((Value >> USBIF_PIPE_DEV_SHIFT) & USBIF_PIPE_DEV_MASK);

    public int Endpoint => (int)((Value >> USBIF_PIPE_EP_SHIFT) & USBIF_PIPE_EP_MASK);

    public UsbTransferType Type => (UsbTransferType)((Value >> USBIF_PIPE_TYPE_SHIFT) & USBIF_PIPE_TYPE_MASK);

    public bool HasReservedBits => (Value & ReservedMask) != 0;

    /// <summary>The endpoint address as USB and usbfs spell it: number plus 0x80 for IN.</summary>
    public byte EndpointAddress => (byte)(Endpoint | (IsIn ? 0x80 : 0));

    public static UsbifPipe Create(int port, int device, int endpoint, bool isIn, UsbTransferType type, bool unlink = false)
    {
        uint v = ((uint)port & USBIF_PIPE_PORT_MASK)
            | (((uint)device & USBIF_PIPE_DEV_MASK) << USBIF_PIPE_DEV_SHIFT)
            | (((uint)endpoint & USBIF_PIPE_EP_MASK) << USBIF_PIPE_EP_SHIFT)
            | (((uint)type & USBIF_PIPE_TYPE_MASK) << USBIF_PIPE_TYPE_SHIFT);
        if (isIn)
        {
            v |= USBIF_PIPE_DIR;
        }
        if (unlink)
        {
            v |= USBIF_PIPE_UNLINK;
        }
        return new UsbifPipe(v);
    }
}
