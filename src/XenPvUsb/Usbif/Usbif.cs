namespace XenPvUsb.Usbif;

/// <summary>Constants of xen/include/public/io/usbif.h, named as in C.</summary>
public static class Usbif
{
    public const uint USBIF_PIPE_PORT_MASK = 0x0000001f;
    public const uint USBIF_PIPE_UNLINK = 0x00000020;
    public const uint USBIF_PIPE_DIR = 0x00000080;
    public const uint USBIF_PIPE_DEV_MASK = 0x0000007f;
    public const int USBIF_PIPE_DEV_SHIFT = 8;
    public const uint USBIF_PIPE_EP_MASK = 0x0000000f;
    public const int USBIF_PIPE_EP_SHIFT = 15;
    public const uint USBIF_PIPE_TYPE_MASK = 0x00000003;
    public const int USBIF_PIPE_TYPE_SHIFT = 30;
    public const uint USBIF_PIPE_TYPE_ISOC = 0;
    public const uint USBIF_PIPE_TYPE_INT = 1;
    public const uint USBIF_PIPE_TYPE_CTRL = 2;
    public const uint USBIF_PIPE_TYPE_BULK = 3;

    public const int USBIF_MAX_SEGMENTS_PER_REQUEST = 16;
    public const int USBIF_MAX_PORTNR = 31;
    public const int USBIF_RING_SIZE = 4096;

    public const ushort USBIF_SHORT_NOT_OK = 0x0001;

    public const int USBIF_STATUS_OK = 0;
    public const int USBIF_STATUS_NODEV = -19;
    public const int USBIF_STATUS_INVAL = -22;
    public const int USBIF_STATUS_STALL = -32;
    public const int USBIF_STATUS_IOERROR = -71;
    public const int USBIF_STATUS_BABBLE = -75;
    public const int USBIF_STATUS_SHUTDOWN = -108;

    public const byte USBIF_SPEED_NONE = 0;
    public const byte USBIF_SPEED_LOW = 1;
    public const byte USBIF_SPEED_FULL = 2;
    public const byte USBIF_SPEED_HIGH = 3;

    public const int USB_VER_UNKNOWN = 0;
    public const int USB_VER_USB11 = 1;
    public const int USB_VER_USB20 = 2;
    public const int USB_VER_USB30 = 3;

    /// <summary>__CONST_RING_SIZE(usbif_urb, USBIF_RING_SIZE).</summary>
    public const int USB_URB_RING_SIZE = 16;

    /// <summary>__CONST_RING_SIZE(usbif_conn, USBIF_RING_SIZE).</summary>
    public const int USB_CONN_RING_SIZE = 512;
}
