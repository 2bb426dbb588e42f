using System.Runtime.InteropServices;
using System.Text;

namespace XenPvUsb.Interop.Linux;

/// <summary>
/// linux/usbdevice_fs.h for x86_64 (host-interfaces.md §1.2–1.4), names as in C. Every value and
/// layout here is checked against the installed header by UsbDevFsAbiTests. The wrappers return 0
/// (or the ioctl's non-negative result) on success and -errno on failure, so callers above never
/// see errno.
/// </summary>
internal static unsafe partial class UsbDevFs
{
    // _IOC(dir, 'U', nr, size) = dir << 30 | size << 16 | 'U' << 8 | nr.
    public const uint USBDEVFS_CONTROL = 0xC0185500;
    public const uint USBDEVFS_BULK = 0xC0185502;
    public const uint USBDEVFS_RESETEP = 0x80045503;
    public const uint USBDEVFS_SETINTERFACE = 0x80085504;
    public const uint USBDEVFS_SETCONFIGURATION = 0x80045505;
    public const uint USBDEVFS_GETDRIVER = 0x41045508;
    public const uint USBDEVFS_SUBMITURB = 0x8038550A;
    public const uint USBDEVFS_DISCARDURB = 0x0000550B;
    public const uint USBDEVFS_REAPURB = 0x4008550C;
    public const uint USBDEVFS_REAPURBNDELAY = 0x4008550D;
    public const uint USBDEVFS_DISCSIGNAL = 0x8010550E;
    public const uint USBDEVFS_CLAIMINTERFACE = 0x8004550F;
    public const uint USBDEVFS_RELEASEINTERFACE = 0x80045510;
    public const uint USBDEVFS_CONNECTINFO = 0x40085511;
    public const uint USBDEVFS_IOCTL = 0xC0105512;
    public const uint USBDEVFS_HUB_PORTINFO = 0x80805513;
    public const uint USBDEVFS_RESET = 0x00005514;
    public const uint USBDEVFS_CLEAR_HALT = 0x80045515;
    public const uint USBDEVFS_DISCONNECT = 0x00005516;
    public const uint USBDEVFS_CONNECT = 0x00005517;
    public const uint USBDEVFS_CLAIM_PORT = 0x80045518;
    public const uint USBDEVFS_RELEASE_PORT = 0x80045519;
    public const uint USBDEVFS_GET_CAPABILITIES = 0x8004551A;
    public const uint USBDEVFS_DISCONNECT_CLAIM = 0x8108551B;
    public const uint USBDEVFS_ALLOC_STREAMS = 0x8008551C;
    public const uint USBDEVFS_FREE_STREAMS = 0x8008551D;
    public const uint USBDEVFS_DROP_PRIVILEGES = 0x4004551E;
    public const uint USBDEVFS_GET_SPEED = 0x0000551F;
    public const uint USBDEVFS_FORBID_SUSPEND = 0x00005521;
    public const uint USBDEVFS_ALLOW_SUSPEND = 0x00005522;
    public const uint USBDEVFS_WAIT_FOR_RESUME = 0x00005523;

    /// <summary>USBDEVFS_CONNINFO_EX(len) = _IOC(_IOC_READ, 'U', 32, len).</summary>
    public static uint USBDEVFS_CONNINFO_EX(uint len) => (2u << 30) | (len << 16) | ('U' << 8) | 32u;

    public const int USBDEVFS_MAXDRIVERNAME = 255;

    public const byte USBDEVFS_URB_TYPE_ISO = 0;
    public const byte USBDEVFS_URB_TYPE_INTERRUPT = 1;
    public const byte USBDEVFS_URB_TYPE_CONTROL = 2;
    public const byte USBDEVFS_URB_TYPE_BULK = 3;

    public const uint USBDEVFS_URB_SHORT_NOT_OK = 0x01;
    public const uint USBDEVFS_URB_ISO_ASAP = 0x02;
    public const uint USBDEVFS_URB_BULK_CONTINUATION = 0x04;
    public const uint USBDEVFS_URB_NO_FSBR = 0x20;
    public const uint USBDEVFS_URB_ZERO_PACKET = 0x40;
    public const uint USBDEVFS_URB_NO_INTERRUPT = 0x80;

    public const uint USBDEVFS_CAP_ZERO_PACKET = 0x01;
    public const uint USBDEVFS_CAP_BULK_CONTINUATION = 0x02;
    public const uint USBDEVFS_CAP_NO_PACKET_SIZE_LIM = 0x04;
    public const uint USBDEVFS_CAP_BULK_SCATTER_GATHER = 0x08;
    public const uint USBDEVFS_CAP_REAP_AFTER_DISCONNECT = 0x10;
    public const uint USBDEVFS_CAP_MMAP = 0x20;
    public const uint USBDEVFS_CAP_DROP_PRIVILEGES = 0x40;
    public const uint USBDEVFS_CAP_CONNINFO_EX = 0x80;
    public const uint USBDEVFS_CAP_SUSPEND = 0x100;

    public const uint USBDEVFS_DISCONNECT_CLAIM_IF_DRIVER = 0x01;
    public const uint USBDEVFS_DISCONNECT_CLAIM_EXCEPT_DRIVER = 0x02;

    // x86_64 errno values the usbfs layer branches on (asm-generic/errno-base.h, errno.h).
    public const int EPERM = 1;
    public const int ENOENT = 2;
    public const int EINTR = 4;
    public const int EIO = 5;
    public const int EAGAIN = 11;
    public const int EACCES = 13;
    public const int EBUSY = 16;
    public const int ENODEV = 19;
    public const int EINVAL = 22;
    public const int ENOTTY = 25;
    public const int ENODATA = 61;
    public const int ENOBUFS = 105;
    public const int EHOSTUNREACH = 113;

    public const int O_RDWR = 0x2;
    public const int O_NONBLOCK = 0x800;
    public const int O_CLOEXEC = 0x80000;

    /// <summary>The kernel's name for the usbfs pseudo-driver that CLAIMINTERFACE binds (§1.11).</summary>
    public const string UsbfsDriverName = "usbfs";

    public static int SubmitUrb(SafeUsbDevFsHandle fd, usbdevfs_urb* urb) => Check(ioctl(fd, USBDEVFS_SUBMITURB, urb));

    /// <summary>USBDEVFS_DISCARDURB takes the same user pointer that was submitted (§1.5).</summary>
    public static int DiscardUrb(SafeUsbDevFsHandle fd, usbdevfs_urb* urb) => Check(ioctl(fd, USBDEVFS_DISCARDURB, urb));

    public static int ReapUrbNoDelay(SafeUsbDevFsHandle fd, out usbdevfs_urb* urb)
    {
        usbdevfs_urb* reaped = null;
        int rc = Check(ioctl(fd, USBDEVFS_REAPURBNDELAY, &reaped));
        urb = rc == 0 ? reaped : null;
        return rc;
    }

    public static int ClaimInterface(SafeUsbDevFsHandle fd, uint ifno) => Check(ioctl(fd, USBDEVFS_CLAIMINTERFACE, &ifno));

    public static int ReleaseInterface(SafeUsbDevFsHandle fd, uint ifno) => Check(ioctl(fd, USBDEVFS_RELEASEINTERFACE, &ifno));

    public static int DisconnectClaim(SafeUsbDevFsHandle fd, uint ifno, uint flags, string driver)
    {
        usbdevfs_disconnect_claim dc = default;
        dc.@interface = ifno;
        dc.flags = flags;
        Encoding.ASCII.GetBytes(driver, new Span<byte>(dc.driver, USBDEVFS_MAXDRIVERNAME));
        return Check(ioctl(fd, USBDEVFS_DISCONNECT_CLAIM, &dc));
    }

    /// <summary>USBDEVFS_IOCTL carrying USBDEVFS_DISCONNECT or USBDEVFS_CONNECT for one interface.</summary>
    public static int InterfaceIoctl(SafeUsbDevFsHandle fd, int ifno, uint code)
    {
        usbdevfs_ioctl cmd = default;
        cmd.ifno = ifno;
        cmd.ioctl_code = (int)code;
        return Check(ioctl(fd, USBDEVFS_IOCTL, &cmd));
    }

    public static int SetConfiguration(SafeUsbDevFsHandle fd, int value) => Check(ioctl(fd, USBDEVFS_SETCONFIGURATION, &value));

    public static int SetInterface(SafeUsbDevFsHandle fd, uint ifno, uint altsetting)
    {
        usbdevfs_setinterface si = default;
        si.@interface = ifno;
        si.altsetting = altsetting;
        return Check(ioctl(fd, USBDEVFS_SETINTERFACE, &si));
    }

    public static int ClearHalt(SafeUsbDevFsHandle fd, uint endpoint) => Check(ioctl(fd, USBDEVFS_CLEAR_HALT, &endpoint));

    public static int Reset(SafeUsbDevFsHandle fd) => Check(ioctl(fd, USBDEVFS_RESET, null));

    /// <summary>The USB_SPEED_* value (the ioctl's return value), or -errno.</summary>
    public static int GetSpeed(SafeUsbDevFsHandle fd) => Check(ioctl(fd, USBDEVFS_GET_SPEED, null));

    public static int GetCapabilities(SafeUsbDevFsHandle fd, out uint capabilities)
    {
        uint caps = 0;
        int rc = Check(ioctl(fd, USBDEVFS_GET_CAPABILITIES, &caps));
        capabilities = rc == 0 ? caps : 0;
        return rc;
    }

    /// <summary>
    /// USBDEVFS_CLAIM_PORT on a hub's node: the fd becomes the owner of port <paramref name="port1"/> (1-based), so no
    /// kernel driver may probe the device there (hub.c usb_hub_claim_port, driver.c usb_probe_interface checks
    /// usb_device_is_owned) and generic_probe leaves a device that enumerates there unconfigured. EBUSY: another fd
    /// owns it; EINVAL: port 0 or beyond the hub's ports (or not a hub); ENODEV: the hub is gone. Closing the fd
    /// releases it (devio.c usbdev_release).
    /// </summary>
    public static int ClaimPort(SafeUsbDevFsHandle fd, uint port1) => Check(ioctl(fd, USBDEVFS_CLAIM_PORT, &port1));

    /// <summary>USBDEVFS_RELEASE_PORT: ENOENT if this fd does not own the port.</summary>
    public static int ReleasePort(SafeUsbDevFsHandle fd, uint port1) => Check(ioctl(fd, USBDEVFS_RELEASE_PORT, &port1));

    /// <summary>USBDEVFS_CONNINFO_EX: the bus and device number of the node's device (ENOTTY before Linux 5.6).</summary>
    public static int GetConnInfo(SafeUsbDevFsHandle fd, out int busNum, out int devNum)
    {
        usbdevfs_conninfo_ex info = default;
        int rc = Check(ioctl(fd, USBDEVFS_CONNINFO_EX((uint)sizeof(usbdevfs_conninfo_ex)), &info));
        busNum = rc >= 0 ? (int)info.busnum : 0;
        devNum = rc >= 0 ? (int)info.devnum : 0;
        return rc < 0 ? rc : 0;
    }

    /// <summary>open(2); returns the fd or -errno.</summary>
    public static int Open(string path, int flags)
    {
        int fd = open(path, flags);
        return fd >= 0 ? fd : -Marshal.GetLastPInvokeError();
    }

    public static int Close(nint fd) => Check(close((int)fd));

    private static int Check(int rc) => rc >= 0 ? rc : -Marshal.GetLastPInvokeError();

    // ioctl(2) is variadic in C; on x86_64 SysV a fixed (int, unsigned long, void*) call is ABI-compatible.
    [LibraryImport("libc", SetLastError = true)]
    private static partial int ioctl(SafeUsbDevFsHandle fd, nuint request, void* arg);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int open(string path, int flags);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int close(int fd);
}

/// <summary>struct usbdevfs_ctrltransfer, 24 bytes.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct usbdevfs_ctrltransfer
{
    public byte bRequestType;
    public byte bRequest;
    public ushort wValue;
    public ushort wIndex;
    public ushort wLength;
    public uint timeout;
    public void* data;
}

/// <summary>struct usbdevfs_setinterface, 8 bytes.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct usbdevfs_setinterface
{
    public uint @interface;
    public uint altsetting;
}

/// <summary>struct usbdevfs_connectinfo, 8 bytes.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct usbdevfs_connectinfo
{
    public uint devnum;
    public byte slow;
}

/// <summary>struct usbdevfs_conninfo_ex, 24 bytes.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct usbdevfs_conninfo_ex
{
    public uint size;
    public uint busnum;
    public uint devnum;
    public uint speed;
    public byte num_ports;
    public fixed byte ports[7];
}

/// <summary>struct usbdevfs_iso_packet_desc, 12 bytes; an array of them follows a usbdevfs_urb.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct usbdevfs_iso_packet_desc
{
    public uint length;
    public uint actual_length;

    /// <summary>Declared unsigned in the header; the kernel stores a negative errno.</summary>
    public uint status;
}

/// <summary>
/// struct usbdevfs_urb, 56 bytes, followed directly by iso_frame_desc[number_of_packets]. The kernel
/// identifies a URB by this struct's user address and writes status, actual_length, error_count
/// (and the ISO descriptors) back into it when it is reaped, so it must not move while in flight.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct usbdevfs_urb
{
    public byte type;
    public byte endpoint;
    public int status;
    public uint flags;
    public void* buffer;
    public int buffer_length;
    public int actual_length;
    public int start_frame;

    /// <summary>Union with stream_id (bulk streams).</summary>
    public int number_of_packets;

    public int error_count;
    public uint signr;
    public void* usercontext;

    /// <summary>The flexible array member that follows the struct.</summary>
    public static usbdevfs_iso_packet_desc* iso_frame_desc(usbdevfs_urb* urb) => (usbdevfs_iso_packet_desc*)(urb + 1);
}

/// <summary>struct usbdevfs_ioctl, 16 bytes.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct usbdevfs_ioctl
{
    public int ifno;
    public int ioctl_code;
    public void* data;
}

/// <summary>struct usbdevfs_disconnect_claim, 264 bytes.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct usbdevfs_disconnect_claim
{
    public uint @interface;
    public uint flags;
    public fixed byte driver[UsbDevFs.USBDEVFS_MAXDRIVERNAME + 1];
}
