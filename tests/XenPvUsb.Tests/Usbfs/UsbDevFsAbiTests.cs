using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using XenPvUsb.Interop.Linux;
using XenPvUsb.Tests.Support;
using static XenPvUsb.Interop.Linux.UsbDevFs;

namespace XenPvUsb.Tests.Usbfs;

/// <summary>Every size, offset, ioctl number and constant mirrored from linux/usbdevice_fs.h (and the netlink/socket bits), checked against the real headers.</summary>
[TestFixture]
public sealed class UsbDevFsAbiTests
{
    private static Dictionary<string, long> s_c = null!;

    [OneTimeSetUp]
    public static void CompileHeaderProbe()
    {
        s_c = CProgram.Run("""
            #include <stdio.h>
            #include <stddef.h>
            #include <errno.h>
            #include <fcntl.h>
            #include <sys/ioctl.h>
            #include <sys/socket.h>
            #include <linux/netlink.h>
            #include <linux/usbdevice_fs.h>
            #include <linux/usb/ch9.h>
            #define S(t) printf("sizeof(" #t ")=%zu\n", sizeof(struct t));
            #define O(t, f) printf("offsetof(" #t "," #f ")=%zu\n", offsetof(struct t, f));
            #define K(c) printf(#c "=%lld\n", (long long)(c));
            int main(void) {
                S(usbdevfs_ctrltransfer) O(usbdevfs_ctrltransfer, bRequestType) O(usbdevfs_ctrltransfer, bRequest) O(usbdevfs_ctrltransfer, wValue)
                O(usbdevfs_ctrltransfer, wIndex) O(usbdevfs_ctrltransfer, wLength) O(usbdevfs_ctrltransfer, timeout) O(usbdevfs_ctrltransfer, data)
                S(usbdevfs_setinterface) O(usbdevfs_setinterface, interface) O(usbdevfs_setinterface, altsetting)
                S(usbdevfs_connectinfo) O(usbdevfs_connectinfo, devnum) O(usbdevfs_connectinfo, slow)
                S(usbdevfs_conninfo_ex) O(usbdevfs_conninfo_ex, size) O(usbdevfs_conninfo_ex, busnum) O(usbdevfs_conninfo_ex, devnum)
                O(usbdevfs_conninfo_ex, speed) O(usbdevfs_conninfo_ex, num_ports) O(usbdevfs_conninfo_ex, ports)
                S(usbdevfs_iso_packet_desc) O(usbdevfs_iso_packet_desc, length) O(usbdevfs_iso_packet_desc, actual_length) O(usbdevfs_iso_packet_desc, status)
                S(usbdevfs_urb) O(usbdevfs_urb, type) O(usbdevfs_urb, endpoint) O(usbdevfs_urb, status) O(usbdevfs_urb, flags) O(usbdevfs_urb, buffer)
                O(usbdevfs_urb, buffer_length) O(usbdevfs_urb, actual_length) O(usbdevfs_urb, start_frame) O(usbdevfs_urb, number_of_packets)
                O(usbdevfs_urb, stream_id) O(usbdevfs_urb, error_count) O(usbdevfs_urb, signr) O(usbdevfs_urb, usercontext) O(usbdevfs_urb, iso_frame_desc)
                S(usbdevfs_ioctl) O(usbdevfs_ioctl, ifno) O(usbdevfs_ioctl, ioctl_code) O(usbdevfs_ioctl, data)
                S(usbdevfs_disconnect_claim) O(usbdevfs_disconnect_claim, interface) O(usbdevfs_disconnect_claim, flags) O(usbdevfs_disconnect_claim, driver)
                S(sockaddr_nl) O(sockaddr_nl, nl_family) O(sockaddr_nl, nl_pad) O(sockaddr_nl, nl_pid) O(sockaddr_nl, nl_groups)
                K(USBDEVFS_CONTROL) K(USBDEVFS_BULK) K(USBDEVFS_RESETEP) K(USBDEVFS_SETINTERFACE) K(USBDEVFS_SETCONFIGURATION)
                K(USBDEVFS_GETDRIVER) K(USBDEVFS_SUBMITURB) K(USBDEVFS_DISCARDURB) K(USBDEVFS_REAPURB) K(USBDEVFS_REAPURBNDELAY)
                K(USBDEVFS_DISCSIGNAL) K(USBDEVFS_CLAIMINTERFACE) K(USBDEVFS_RELEASEINTERFACE) K(USBDEVFS_CONNECTINFO) K(USBDEVFS_IOCTL)
                K(USBDEVFS_HUB_PORTINFO) K(USBDEVFS_RESET) K(USBDEVFS_CLEAR_HALT) K(USBDEVFS_DISCONNECT) K(USBDEVFS_CONNECT)
                K(USBDEVFS_CLAIM_PORT) K(USBDEVFS_RELEASE_PORT) K(USBDEVFS_GET_CAPABILITIES) K(USBDEVFS_DISCONNECT_CLAIM)
                K(USBDEVFS_ALLOC_STREAMS) K(USBDEVFS_FREE_STREAMS) K(USBDEVFS_DROP_PRIVILEGES) K(USBDEVFS_GET_SPEED)
                K(USBDEVFS_CONNINFO_EX(sizeof(struct usbdevfs_conninfo_ex))) K(USBDEVFS_CONNINFO_EX(8))
                K(USBDEVFS_FORBID_SUSPEND) K(USBDEVFS_ALLOW_SUSPEND) K(USBDEVFS_WAIT_FOR_RESUME)
                K(USBDEVFS_MAXDRIVERNAME)
                K(USBDEVFS_URB_TYPE_ISO) K(USBDEVFS_URB_TYPE_INTERRUPT) K(USBDEVFS_URB_TYPE_CONTROL) K(USBDEVFS_URB_TYPE_BULK)
                K(USBDEVFS_URB_SHORT_NOT_OK) K(USBDEVFS_URB_ISO_ASAP) K(USBDEVFS_URB_BULK_CONTINUATION) K(USBDEVFS_URB_NO_FSBR)
                K(USBDEVFS_URB_ZERO_PACKET) K(USBDEVFS_URB_NO_INTERRUPT)
                K(USBDEVFS_CAP_ZERO_PACKET) K(USBDEVFS_CAP_BULK_CONTINUATION) K(USBDEVFS_CAP_NO_PACKET_SIZE_LIM)
                K(USBDEVFS_CAP_BULK_SCATTER_GATHER) K(USBDEVFS_CAP_REAP_AFTER_DISCONNECT) K(USBDEVFS_CAP_MMAP)
                K(USBDEVFS_CAP_DROP_PRIVILEGES) K(USBDEVFS_CAP_CONNINFO_EX) K(USBDEVFS_CAP_SUSPEND)
                K(USBDEVFS_DISCONNECT_CLAIM_IF_DRIVER) K(USBDEVFS_DISCONNECT_CLAIM_EXCEPT_DRIVER)
                K(USB_SPEED_UNKNOWN) K(USB_SPEED_LOW) K(USB_SPEED_FULL) K(USB_SPEED_HIGH) K(USB_SPEED_WIRELESS) K(USB_SPEED_SUPER) K(USB_SPEED_SUPER_PLUS)
                K(EPERM) K(ENOENT) K(EINTR) K(EIO) K(EAGAIN) K(EACCES) K(EBUSY) K(ENODEV) K(EINVAL) K(ENOTTY) K(ENODATA) K(ENOBUFS) K(EHOSTUNREACH)
                K(O_RDWR) K(O_NONBLOCK) K(O_CLOEXEC)
                K(AF_NETLINK) K(SOCK_DGRAM) K(SOCK_NONBLOCK) K(SOCK_CLOEXEC) K(NETLINK_KOBJECT_UEVENT) K(SOL_SOCKET) K(SO_RCVBUF) K(SO_RCVBUFFORCE)
                return 0;
            }
            """);
    }

    private static long C(string key) => s_c.TryGetValue(key, out long v) ? v : throw new KeyNotFoundException(key);

    private static void AssertLayout<T>(string cName, params string[] fields)
        where T : struct
    {
        Assert.That(Unsafe.SizeOf<T>(), Is.EqualTo(C($"sizeof({cName})")), $"sizeof({cName})");
        foreach (string f in fields)
        {
            Assert.That((long)Marshal.OffsetOf<T>(f), Is.EqualTo(C($"offsetof({cName},{f})")), $"offsetof({cName},{f})");
        }
    }

    [Test]
    public void CtrlTransfer_MatchesHeader() =>
        AssertLayout<usbdevfs_ctrltransfer>("usbdevfs_ctrltransfer", "bRequestType", "bRequest", "wValue", "wIndex", "wLength", "timeout", "data");

    [Test]
    public void SetInterface_MatchesHeader() =>
        AssertLayout<usbdevfs_setinterface>("usbdevfs_setinterface", "interface", "altsetting");

    [Test]
    public void ConnectInfo_MatchesHeader() =>
        AssertLayout<usbdevfs_connectinfo>("usbdevfs_connectinfo", "devnum", "slow");

    [Test]
    public void ConnInfoEx_MatchesHeader() =>
        AssertLayout<usbdevfs_conninfo_ex>("usbdevfs_conninfo_ex", "size", "busnum", "devnum", "speed", "num_ports", "ports");

    [Test]
    public void IsoPacketDesc_MatchesHeader() =>
        AssertLayout<usbdevfs_iso_packet_desc>("usbdevfs_iso_packet_desc", "length", "actual_length", "status");

    [Test]
    public unsafe void Urb_MatchesHeader()
    {
        AssertLayout<usbdevfs_urb>("usbdevfs_urb", "type", "endpoint", "status", "flags", "buffer", "buffer_length", "actual_length",
            "start_frame", "number_of_packets", "error_count", "signr", "usercontext");
        // The union member stream_id shares number_of_packets' slot; iso_frame_desc[] starts right after the struct.
        Assert.That((long)Marshal.OffsetOf<usbdevfs_urb>("number_of_packets"), Is.EqualTo(C("offsetof(usbdevfs_urb,stream_id)")));
        usbdevfs_urb urb = default;
        Assert.That((long)((byte*)usbdevfs_urb.iso_frame_desc(&urb) - (byte*)&urb), Is.EqualTo(C("offsetof(usbdevfs_urb,iso_frame_desc)")));
    }

    [Test]
    public void Ioctl_MatchesHeader() =>
        AssertLayout<usbdevfs_ioctl>("usbdevfs_ioctl", "ifno", "ioctl_code", "data");

    [Test]
    public void DisconnectClaim_MatchesHeader() =>
        AssertLayout<usbdevfs_disconnect_claim>("usbdevfs_disconnect_claim", "interface", "flags", "driver");

    [Test]
    public void SockaddrNl_MatchesHeader() =>
        AssertLayout<sockaddr_nl>("sockaddr_nl", "nl_family", "nl_pad", "nl_pid", "nl_groups");

    [Test]
    public void IoctlNumbers_MatchHeader()
    {
        Assert.Multiple(() =>
        {
            Assert.That(C("USBDEVFS_CONTROL"), Is.EqualTo((long)USBDEVFS_CONTROL), "USBDEVFS_CONTROL");
            Assert.That(C("USBDEVFS_BULK"), Is.EqualTo((long)USBDEVFS_BULK), "USBDEVFS_BULK");
            Assert.That(C("USBDEVFS_RESETEP"), Is.EqualTo((long)USBDEVFS_RESETEP), "USBDEVFS_RESETEP");
            Assert.That(C("USBDEVFS_SETINTERFACE"), Is.EqualTo((long)USBDEVFS_SETINTERFACE), "USBDEVFS_SETINTERFACE");
            Assert.That(C("USBDEVFS_SETCONFIGURATION"), Is.EqualTo((long)USBDEVFS_SETCONFIGURATION), "USBDEVFS_SETCONFIGURATION");
            Assert.That(C("USBDEVFS_GETDRIVER"), Is.EqualTo((long)USBDEVFS_GETDRIVER), "USBDEVFS_GETDRIVER");
            Assert.That(C("USBDEVFS_SUBMITURB"), Is.EqualTo((long)USBDEVFS_SUBMITURB), "USBDEVFS_SUBMITURB");
            Assert.That(C("USBDEVFS_DISCARDURB"), Is.EqualTo((long)USBDEVFS_DISCARDURB), "USBDEVFS_DISCARDURB");
            Assert.That(C("USBDEVFS_REAPURB"), Is.EqualTo((long)USBDEVFS_REAPURB), "USBDEVFS_REAPURB");
            Assert.That(C("USBDEVFS_REAPURBNDELAY"), Is.EqualTo((long)USBDEVFS_REAPURBNDELAY), "USBDEVFS_REAPURBNDELAY");
            Assert.That(C("USBDEVFS_DISCSIGNAL"), Is.EqualTo((long)USBDEVFS_DISCSIGNAL), "USBDEVFS_DISCSIGNAL");
            Assert.That(C("USBDEVFS_CLAIMINTERFACE"), Is.EqualTo((long)USBDEVFS_CLAIMINTERFACE), "USBDEVFS_CLAIMINTERFACE");
            Assert.That(C("USBDEVFS_RELEASEINTERFACE"), Is.EqualTo((long)USBDEVFS_RELEASEINTERFACE), "USBDEVFS_RELEASEINTERFACE");
            Assert.That(C("USBDEVFS_CONNECTINFO"), Is.EqualTo((long)USBDEVFS_CONNECTINFO), "USBDEVFS_CONNECTINFO");
            Assert.That(C("USBDEVFS_IOCTL"), Is.EqualTo((long)USBDEVFS_IOCTL), "USBDEVFS_IOCTL");
            Assert.That(C("USBDEVFS_HUB_PORTINFO"), Is.EqualTo((long)USBDEVFS_HUB_PORTINFO), "USBDEVFS_HUB_PORTINFO");
            Assert.That(C("USBDEVFS_RESET"), Is.EqualTo((long)USBDEVFS_RESET), "USBDEVFS_RESET");
            Assert.That(C("USBDEVFS_CLEAR_HALT"), Is.EqualTo((long)USBDEVFS_CLEAR_HALT), "USBDEVFS_CLEAR_HALT");
            Assert.That(C("USBDEVFS_DISCONNECT"), Is.EqualTo((long)USBDEVFS_DISCONNECT), "USBDEVFS_DISCONNECT");
            Assert.That(C("USBDEVFS_CONNECT"), Is.EqualTo((long)USBDEVFS_CONNECT), "USBDEVFS_CONNECT");
            Assert.That(C("USBDEVFS_CLAIM_PORT"), Is.EqualTo((long)USBDEVFS_CLAIM_PORT), "USBDEVFS_CLAIM_PORT");
            Assert.That(C("USBDEVFS_RELEASE_PORT"), Is.EqualTo((long)USBDEVFS_RELEASE_PORT), "USBDEVFS_RELEASE_PORT");
            Assert.That(C("USBDEVFS_GET_CAPABILITIES"), Is.EqualTo((long)USBDEVFS_GET_CAPABILITIES), "USBDEVFS_GET_CAPABILITIES");
            Assert.That(C("USBDEVFS_DISCONNECT_CLAIM"), Is.EqualTo((long)USBDEVFS_DISCONNECT_CLAIM), "USBDEVFS_DISCONNECT_CLAIM");
            Assert.That(C("USBDEVFS_ALLOC_STREAMS"), Is.EqualTo((long)USBDEVFS_ALLOC_STREAMS), "USBDEVFS_ALLOC_STREAMS");
            Assert.That(C("USBDEVFS_FREE_STREAMS"), Is.EqualTo((long)USBDEVFS_FREE_STREAMS), "USBDEVFS_FREE_STREAMS");
            Assert.That(C("USBDEVFS_DROP_PRIVILEGES"), Is.EqualTo((long)USBDEVFS_DROP_PRIVILEGES), "USBDEVFS_DROP_PRIVILEGES");
            Assert.That(C("USBDEVFS_GET_SPEED"), Is.EqualTo((long)USBDEVFS_GET_SPEED), "USBDEVFS_GET_SPEED");
            Assert.That(USBDEVFS_CONNINFO_EX((uint)Unsafe.SizeOf<usbdevfs_conninfo_ex>()), Is.EqualTo(C("USBDEVFS_CONNINFO_EX(sizeof(struct usbdevfs_conninfo_ex))")));
            Assert.That(USBDEVFS_CONNINFO_EX(8), Is.EqualTo(C("USBDEVFS_CONNINFO_EX(8)")));
            Assert.That(C("USBDEVFS_FORBID_SUSPEND"), Is.EqualTo((long)USBDEVFS_FORBID_SUSPEND), "USBDEVFS_FORBID_SUSPEND");
            Assert.That(C("USBDEVFS_ALLOW_SUSPEND"), Is.EqualTo((long)USBDEVFS_ALLOW_SUSPEND), "USBDEVFS_ALLOW_SUSPEND");
            Assert.That(C("USBDEVFS_WAIT_FOR_RESUME"), Is.EqualTo((long)USBDEVFS_WAIT_FOR_RESUME), "USBDEVFS_WAIT_FOR_RESUME");
        });
    }

    [Test]
    public void Constants_MatchHeader()
    {
        Assert.Multiple(() =>
        {
            Assert.That(C("USBDEVFS_MAXDRIVERNAME"), Is.EqualTo((long)USBDEVFS_MAXDRIVERNAME), "USBDEVFS_MAXDRIVERNAME");
            Assert.That(C("USBDEVFS_URB_TYPE_ISO"), Is.EqualTo((long)USBDEVFS_URB_TYPE_ISO), "USBDEVFS_URB_TYPE_ISO");
            Assert.That(C("USBDEVFS_URB_TYPE_INTERRUPT"), Is.EqualTo((long)USBDEVFS_URB_TYPE_INTERRUPT), "USBDEVFS_URB_TYPE_INTERRUPT");
            Assert.That(C("USBDEVFS_URB_TYPE_CONTROL"), Is.EqualTo((long)USBDEVFS_URB_TYPE_CONTROL), "USBDEVFS_URB_TYPE_CONTROL");
            Assert.That(C("USBDEVFS_URB_TYPE_BULK"), Is.EqualTo((long)USBDEVFS_URB_TYPE_BULK), "USBDEVFS_URB_TYPE_BULK");
            Assert.That(C("USBDEVFS_URB_SHORT_NOT_OK"), Is.EqualTo((long)USBDEVFS_URB_SHORT_NOT_OK), "USBDEVFS_URB_SHORT_NOT_OK");
            Assert.That(C("USBDEVFS_URB_ISO_ASAP"), Is.EqualTo((long)USBDEVFS_URB_ISO_ASAP), "USBDEVFS_URB_ISO_ASAP");
            Assert.That(C("USBDEVFS_URB_BULK_CONTINUATION"), Is.EqualTo((long)USBDEVFS_URB_BULK_CONTINUATION), "USBDEVFS_URB_BULK_CONTINUATION");
            Assert.That(C("USBDEVFS_URB_NO_FSBR"), Is.EqualTo((long)USBDEVFS_URB_NO_FSBR), "USBDEVFS_URB_NO_FSBR");
            Assert.That(C("USBDEVFS_URB_ZERO_PACKET"), Is.EqualTo((long)USBDEVFS_URB_ZERO_PACKET), "USBDEVFS_URB_ZERO_PACKET");
            Assert.That(C("USBDEVFS_URB_NO_INTERRUPT"), Is.EqualTo((long)USBDEVFS_URB_NO_INTERRUPT), "USBDEVFS_URB_NO_INTERRUPT");
            Assert.That(C("USBDEVFS_CAP_ZERO_PACKET"), Is.EqualTo((long)USBDEVFS_CAP_ZERO_PACKET), "USBDEVFS_CAP_ZERO_PACKET");
            Assert.That(C("USBDEVFS_CAP_BULK_CONTINUATION"), Is.EqualTo((long)USBDEVFS_CAP_BULK_CONTINUATION), "USBDEVFS_CAP_BULK_CONTINUATION");
            Assert.That(C("USBDEVFS_CAP_NO_PACKET_SIZE_LIM"), Is.EqualTo((long)USBDEVFS_CAP_NO_PACKET_SIZE_LIM), "USBDEVFS_CAP_NO_PACKET_SIZE_LIM");
            Assert.That(C("USBDEVFS_CAP_BULK_SCATTER_GATHER"), Is.EqualTo((long)USBDEVFS_CAP_BULK_SCATTER_GATHER), "USBDEVFS_CAP_BULK_SCATTER_GATHER");
            Assert.That(C("USBDEVFS_CAP_REAP_AFTER_DISCONNECT"), Is.EqualTo((long)USBDEVFS_CAP_REAP_AFTER_DISCONNECT), "USBDEVFS_CAP_REAP_AFTER_DISCONNECT");
            Assert.That(C("USBDEVFS_CAP_MMAP"), Is.EqualTo((long)USBDEVFS_CAP_MMAP), "USBDEVFS_CAP_MMAP");
            Assert.That(C("USBDEVFS_CAP_DROP_PRIVILEGES"), Is.EqualTo((long)USBDEVFS_CAP_DROP_PRIVILEGES), "USBDEVFS_CAP_DROP_PRIVILEGES");
            Assert.That(C("USBDEVFS_CAP_CONNINFO_EX"), Is.EqualTo((long)USBDEVFS_CAP_CONNINFO_EX), "USBDEVFS_CAP_CONNINFO_EX");
            Assert.That(C("USBDEVFS_CAP_SUSPEND"), Is.EqualTo((long)USBDEVFS_CAP_SUSPEND), "USBDEVFS_CAP_SUSPEND");
            Assert.That(C("USBDEVFS_DISCONNECT_CLAIM_IF_DRIVER"), Is.EqualTo((long)USBDEVFS_DISCONNECT_CLAIM_IF_DRIVER), "USBDEVFS_DISCONNECT_CLAIM_IF_DRIVER");
            Assert.That(C("USBDEVFS_DISCONNECT_CLAIM_EXCEPT_DRIVER"), Is.EqualTo((long)USBDEVFS_DISCONNECT_CLAIM_EXCEPT_DRIVER), "USBDEVFS_DISCONNECT_CLAIM_EXCEPT_DRIVER");
            Assert.That(C("EPERM"), Is.EqualTo((long)EPERM), "EPERM");
            Assert.That(C("ENOENT"), Is.EqualTo((long)ENOENT), "ENOENT");
            Assert.That(C("EINTR"), Is.EqualTo((long)EINTR), "EINTR");
            Assert.That(C("EIO"), Is.EqualTo((long)EIO), "EIO");
            Assert.That(C("EAGAIN"), Is.EqualTo((long)EAGAIN), "EAGAIN");
            Assert.That(C("EACCES"), Is.EqualTo((long)EACCES), "EACCES");
            Assert.That(C("EBUSY"), Is.EqualTo((long)EBUSY), "EBUSY");
            Assert.That(C("ENODEV"), Is.EqualTo((long)ENODEV), "ENODEV");
            Assert.That(C("EINVAL"), Is.EqualTo((long)EINVAL), "EINVAL");
            Assert.That(C("ENOTTY"), Is.EqualTo((long)ENOTTY), "ENOTTY");
            Assert.That(C("ENODATA"), Is.EqualTo((long)ENODATA), "ENODATA");
            Assert.That(C("ENOBUFS"), Is.EqualTo((long)ENOBUFS), "ENOBUFS");
            Assert.That(C("EHOSTUNREACH"), Is.EqualTo((long)EHOSTUNREACH), "EHOSTUNREACH");
            Assert.That(C("O_RDWR"), Is.EqualTo((long)O_RDWR), "O_RDWR");
            Assert.That(C("O_NONBLOCK"), Is.EqualTo((long)O_NONBLOCK), "O_NONBLOCK");
            Assert.That(C("O_CLOEXEC"), Is.EqualTo((long)O_CLOEXEC), "O_CLOEXEC");
            Assert.That(C("AF_NETLINK"), Is.EqualTo((long)Netlink.AF_NETLINK), "AF_NETLINK");
            Assert.That(C("SOCK_DGRAM"), Is.EqualTo((long)Netlink.SOCK_DGRAM), "SOCK_DGRAM");
            Assert.That(C("SOCK_NONBLOCK"), Is.EqualTo((long)Netlink.SOCK_NONBLOCK), "SOCK_NONBLOCK");
            Assert.That(C("SOCK_CLOEXEC"), Is.EqualTo((long)Netlink.SOCK_CLOEXEC), "SOCK_CLOEXEC");
            Assert.That(C("NETLINK_KOBJECT_UEVENT"), Is.EqualTo((long)Netlink.NETLINK_KOBJECT_UEVENT), "NETLINK_KOBJECT_UEVENT");
            Assert.That(C("SOL_SOCKET"), Is.EqualTo((long)Netlink.SOL_SOCKET), "SOL_SOCKET");
            Assert.That(C("SO_RCVBUF"), Is.EqualTo((long)Netlink.SO_RCVBUF), "SO_RCVBUF");
            Assert.That(C("SO_RCVBUFFORCE"), Is.EqualTo((long)Netlink.SO_RCVBUFFORCE), "SO_RCVBUFFORCE");
        });
    }

    [Test]
    public void UsbSpeed_MatchesUsbDeviceSpeed()
    {
        Assert.Multiple(() =>
        {
            Assert.That(C("USB_SPEED_UNKNOWN"), Is.EqualTo((long)XenPvUsb.Usb.UsbSpeed.Unknown), "USB_SPEED_UNKNOWN");
            Assert.That(C("USB_SPEED_LOW"), Is.EqualTo((long)XenPvUsb.Usb.UsbSpeed.Low), "USB_SPEED_LOW");
            Assert.That(C("USB_SPEED_FULL"), Is.EqualTo((long)XenPvUsb.Usb.UsbSpeed.Full), "USB_SPEED_FULL");
            Assert.That(C("USB_SPEED_HIGH"), Is.EqualTo((long)XenPvUsb.Usb.UsbSpeed.High), "USB_SPEED_HIGH");
            Assert.That(C("USB_SPEED_WIRELESS"), Is.EqualTo((long)XenPvUsb.Usb.UsbSpeed.Wireless), "USB_SPEED_WIRELESS");
            Assert.That(C("USB_SPEED_SUPER"), Is.EqualTo((long)XenPvUsb.Usb.UsbSpeed.Super), "USB_SPEED_SUPER");
            Assert.That(C("USB_SPEED_SUPER_PLUS"), Is.EqualTo((long)XenPvUsb.Usb.UsbSpeed.SuperPlus), "USB_SPEED_SUPER_PLUS");
        });
    }

    [Test]
    public void UsbTransferType_MatchesUrbTypes()
    {
        Assert.Multiple(() =>
        {
            Assert.That(C("USBDEVFS_URB_TYPE_ISO"), Is.EqualTo((long)XenPvUsb.Usb.UsbTransferType.Isochronous), "USBDEVFS_URB_TYPE_ISO");
            Assert.That(C("USBDEVFS_URB_TYPE_INTERRUPT"), Is.EqualTo((long)XenPvUsb.Usb.UsbTransferType.Interrupt), "USBDEVFS_URB_TYPE_INTERRUPT");
            Assert.That(C("USBDEVFS_URB_TYPE_CONTROL"), Is.EqualTo((long)XenPvUsb.Usb.UsbTransferType.Control), "USBDEVFS_URB_TYPE_CONTROL");
            Assert.That(C("USBDEVFS_URB_TYPE_BULK"), Is.EqualTo((long)XenPvUsb.Usb.UsbTransferType.Bulk), "USBDEVFS_URB_TYPE_BULK");
        });
    }
}
