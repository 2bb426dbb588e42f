using static XenPvUsb.Usbif.Usbif;

namespace XenPvUsb.Usbif;

/// <summary>
/// The one translation from a Linux URB status (0 or negative errno, as usbfs and the emulated
/// devices report it) to a usbif response status. Linux xen-hcd maps any value outside the
/// USBIF_STATUS_* set to -ESHUTDOWN, so only those values are ever put on the ring.
/// </summary>
public static class UsbifStatus
{
    public static int FromLinuxStatus(int status) => status switch
    {
        0 => USBIF_STATUS_OK,
        -Errno.ENODEV => USBIF_STATUS_NODEV,
        -Errno.EINVAL => USBIF_STATUS_INVAL,
        -Errno.EPIPE => USBIF_STATUS_STALL,
        -Errno.EOVERFLOW => USBIF_STATUS_BABBLE,
        // Transmission errors (no response, CRC, bit stuffing, short packet with SHORT_NOT_OK, HC overrun).
        -Errno.EPROTO or -Errno.EILSEQ or -Errno.ETIME or -Errno.ETIMEDOUT or -Errno.ECOMM or -Errno.ENOSR
            or -Errno.EREMOTEIO => USBIF_STATUS_IOERROR,
        // Killed (unlinked, discarded) or anything else: the transfer did not happen.
        _ => USBIF_STATUS_SHUTDOWN,
    };
}

/// <summary>Linux errno values on x86_64 that the data path uses.</summary>
public static class Errno
{
    public const int ENOENT = 2;
    public const int EIO = 5;
    public const int E2BIG = 7;
    public const int EAGAIN = 11;
    public const int ENOMEM = 12;
    public const int EFAULT = 14;
    public const int EBUSY = 16;
    public const int ENODEV = 19;
    public const int EINVAL = 22;
    public const int EPIPE = 32;
    public const int ETIME = 62;
    public const int ENOSR = 63;
    public const int ECOMM = 70;
    public const int EPROTO = 71;
    public const int EOVERFLOW = 75;
    public const int EILSEQ = 84;
    public const int ECONNRESET = 104;
    public const int ESHUTDOWN = 108;
    public const int ETIMEDOUT = 110;
    public const int EREMOTEIO = 121;
}
