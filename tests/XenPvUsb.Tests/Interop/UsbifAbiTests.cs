using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using global::XenPvUsb.Usbif;
using XenPvUsb.Rings;
using XenPvUsb.Tests.Support;
using static global::XenPvUsb.Usbif.Usbif;
using U = global::XenPvUsb.Usbif.Usbif;

namespace XenPvUsb.Tests.Interop;

/// <summary>Every size, offset and constant the C# mirror of Xen's usbif.h uses, checked against the real header (libxen-dev).</summary>
[TestFixture]
public sealed class UsbifAbiTests
{
    private static Dictionary<string, long> s_c = null!;

    [OneTimeSetUp]
    public static void CompileHeaderProbe()
    {
        s_c = CProgram.Run("""
            #include <stdio.h>
            #include <stddef.h>
            #include <stdint.h>
            #include <xen/io/usbif.h>
            #define S(t) printf("sizeof(" #t ")=%zu\n", sizeof(struct t));
            #define O(t, f) printf("offsetof(" #t "," #f ")=%zu\n", offsetof(struct t, f));
            #define K(c) printf(#c "=%lld\n", (long long)(c));
            int main(void) {
                S(usbif_request_segment) O(usbif_request_segment, gref) O(usbif_request_segment, offset) O(usbif_request_segment, length)
                S(usbif_urb_request) O(usbif_urb_request, id) O(usbif_urb_request, nr_buffer_segs) O(usbif_urb_request, pipe)
                O(usbif_urb_request, transfer_flags) O(usbif_urb_request, buffer_length) O(usbif_urb_request, u)
                O(usbif_urb_request, u.isoc.interval) O(usbif_urb_request, u.isoc.start_frame) O(usbif_urb_request, u.isoc.number_of_packets)
                O(usbif_urb_request, u.isoc.nr_frame_desc_segs) O(usbif_urb_request, u.intr.interval) O(usbif_urb_request, u.unlink.unlink_id)
                O(usbif_urb_request, seg)
                S(usbif_urb_response) O(usbif_urb_response, id) O(usbif_urb_response, start_frame) O(usbif_urb_response, status)
                O(usbif_urb_response, actual_length) O(usbif_urb_response, error_count)
                S(usbif_conn_request) O(usbif_conn_request, id)
                S(usbif_conn_response) O(usbif_conn_response, id) O(usbif_conn_response, portnum) O(usbif_conn_response, speed)
                S(usbif_urb_sring) O(usbif_urb_sring, req_prod) O(usbif_urb_sring, req_event) O(usbif_urb_sring, rsp_prod) O(usbif_urb_sring, rsp_event) O(usbif_urb_sring, ring)
                O(usbif_conn_sring, ring)
                K(USB_URB_RING_SIZE) K(USB_CONN_RING_SIZE)
                K(USBIF_PIPE_PORT_MASK) K(USBIF_PIPE_UNLINK) K(USBIF_PIPE_DIR) K(USBIF_PIPE_DEV_MASK) K(USBIF_PIPE_DEV_SHIFT)
                K(USBIF_PIPE_EP_MASK) K(USBIF_PIPE_EP_SHIFT) K(USBIF_PIPE_TYPE_MASK) K(USBIF_PIPE_TYPE_SHIFT)
                K(USBIF_PIPE_TYPE_ISOC) K(USBIF_PIPE_TYPE_INT) K(USBIF_PIPE_TYPE_CTRL) K(USBIF_PIPE_TYPE_BULK)
                K(USBIF_MAX_SEGMENTS_PER_REQUEST) K(USBIF_MAX_PORTNR) K(USBIF_RING_SIZE) K(USBIF_SHORT_NOT_OK)
                K(USBIF_STATUS_OK) K(USBIF_STATUS_NODEV) K(USBIF_STATUS_INVAL) K(USBIF_STATUS_STALL) K(USBIF_STATUS_IOERROR)
                K(USBIF_STATUS_BABBLE) K(USBIF_STATUS_SHUTDOWN)
                K(USBIF_SPEED_NONE) K(USBIF_SPEED_LOW) K(USBIF_SPEED_FULL) K(USBIF_SPEED_HIGH)
                K(USB_VER_UNKNOWN) K(USB_VER_USB11) K(USB_VER_USB20) K(USB_VER_USB30)
                return 0;
            }
            """);
    }

    private static long C(string key) => s_c.TryGetValue(key, out long v) ? v : throw new KeyNotFoundException(key);

    private static int Off<T>(string field) => (int)Marshal.OffsetOf<T>(field);

    [Test]
    public void Segment_MatchesHeader()
    {
        Assert.That(Unsafe.SizeOf<usbif_request_segment>(), Is.EqualTo(C("sizeof(usbif_request_segment)")));
        Assert.That(Off<usbif_request_segment>("gref"), Is.EqualTo(C("offsetof(usbif_request_segment,gref)")));
        Assert.That(Off<usbif_request_segment>("offset"), Is.EqualTo(C("offsetof(usbif_request_segment,offset)")));
        Assert.That(Off<usbif_request_segment>("length"), Is.EqualTo(C("offsetof(usbif_request_segment,length)")));
    }

    [Test]
    public void UrbRequest_MatchesHeader()
    {
        Assert.That(Unsafe.SizeOf<usbif_urb_request>(), Is.EqualTo(C("sizeof(usbif_urb_request)")));
        Assert.That(Off<usbif_urb_request>("id"), Is.EqualTo(C("offsetof(usbif_urb_request,id)")));
        Assert.That(Off<usbif_urb_request>("nr_buffer_segs"), Is.EqualTo(C("offsetof(usbif_urb_request,nr_buffer_segs)")));
        Assert.That(Off<usbif_urb_request>("pipe"), Is.EqualTo(C("offsetof(usbif_urb_request,pipe)")));
        Assert.That(Off<usbif_urb_request>("transfer_flags"), Is.EqualTo(C("offsetof(usbif_urb_request,transfer_flags)")));
        Assert.That(Off<usbif_urb_request>("buffer_length"), Is.EqualTo(C("offsetof(usbif_urb_request,buffer_length)")));
        Assert.That(Off<usbif_urb_request>("u_ctrl"), Is.EqualTo(C("offsetof(usbif_urb_request,u)")));
        Assert.That(Off<usbif_urb_request>("u_isoc_interval"), Is.EqualTo(C("offsetof(usbif_urb_request,u.isoc.interval)")));
        Assert.That(Off<usbif_urb_request>("u_isoc_start_frame"), Is.EqualTo(C("offsetof(usbif_urb_request,u.isoc.start_frame)")));
        Assert.That(Off<usbif_urb_request>("u_isoc_number_of_packets"), Is.EqualTo(C("offsetof(usbif_urb_request,u.isoc.number_of_packets)")));
        Assert.That(Off<usbif_urb_request>("u_isoc_nr_frame_desc_segs"), Is.EqualTo(C("offsetof(usbif_urb_request,u.isoc.nr_frame_desc_segs)")));
        Assert.That(Off<usbif_urb_request>("u_intr_interval"), Is.EqualTo(C("offsetof(usbif_urb_request,u.intr.interval)")));
        Assert.That(Off<usbif_urb_request>("u_unlink_unlink_id"), Is.EqualTo(C("offsetof(usbif_urb_request,u.unlink.unlink_id)")));
        Assert.That(Off<usbif_urb_request>("seg"), Is.EqualTo(C("offsetof(usbif_urb_request,seg)")));
    }

    [Test]
    public void UrbResponse_MatchesHeader()
    {
        Assert.That(Unsafe.SizeOf<usbif_urb_response>(), Is.EqualTo(C("sizeof(usbif_urb_response)")));
        foreach (string f in new[] { "id", "start_frame", "status", "actual_length", "error_count" })
        {
            Assert.That(Off<usbif_urb_response>(f), Is.EqualTo(C($"offsetof(usbif_urb_response,{f})")), f);
        }
    }

    [Test]
    public void ConnStructs_MatchHeader()
    {
        Assert.That(Unsafe.SizeOf<usbif_conn_request>(), Is.EqualTo(C("sizeof(usbif_conn_request)")));
        Assert.That(Unsafe.SizeOf<usbif_conn_response>(), Is.EqualTo(C("sizeof(usbif_conn_response)")));
        foreach (string f in new[] { "id", "portnum", "speed" })
        {
            Assert.That(Off<usbif_conn_response>(f), Is.EqualTo(C($"offsetof(usbif_conn_response,{f})")), f);
        }
    }

    [Test]
    public void SharedRing_HeaderAndSizes_MatchRingH()
    {
        Assert.That(C("offsetof(usbif_urb_sring,req_prod)"), Is.EqualTo(RingIndex.ReqProdOffset));
        Assert.That(C("offsetof(usbif_urb_sring,req_event)"), Is.EqualTo(RingIndex.ReqEventOffset));
        Assert.That(C("offsetof(usbif_urb_sring,rsp_prod)"), Is.EqualTo(RingIndex.RspProdOffset));
        Assert.That(C("offsetof(usbif_urb_sring,rsp_event)"), Is.EqualTo(RingIndex.RspEventOffset));
        Assert.That(C("offsetof(usbif_urb_sring,ring)"), Is.EqualTo(RingIndex.HeaderSize));
        Assert.That(C("offsetof(usbif_conn_sring,ring)"), Is.EqualTo(RingIndex.HeaderSize));
        Assert.That(C("USB_URB_RING_SIZE"), Is.EqualTo(USB_URB_RING_SIZE));
        Assert.That(C("USB_CONN_RING_SIZE"), Is.EqualTo(USB_CONN_RING_SIZE));
        Assert.That(RingIndex.RingSize(USBIF_RING_SIZE, Unsafe.SizeOf<usbif_urb_request>()), Is.EqualTo(C("USB_URB_RING_SIZE")));
        Assert.That(RingIndex.RingSize(USBIF_RING_SIZE, Unsafe.SizeOf<usbif_conn_response>()), Is.EqualTo(C("USB_CONN_RING_SIZE")));
    }

    [TestCase("USBIF_PIPE_PORT_MASK", U.USBIF_PIPE_PORT_MASK)]
    [TestCase("USBIF_PIPE_UNLINK", U.USBIF_PIPE_UNLINK)]
    [TestCase("USBIF_PIPE_DIR", U.USBIF_PIPE_DIR)]
    [TestCase("USBIF_PIPE_DEV_MASK", U.USBIF_PIPE_DEV_MASK)]
    [TestCase("USBIF_PIPE_DEV_SHIFT", U.USBIF_PIPE_DEV_SHIFT)]
    [TestCase("USBIF_PIPE_EP_MASK", U.USBIF_PIPE_EP_MASK)]
    [TestCase("USBIF_PIPE_EP_SHIFT", U.USBIF_PIPE_EP_SHIFT)]
    [TestCase("USBIF_PIPE_TYPE_MASK", U.USBIF_PIPE_TYPE_MASK)]
    [TestCase("USBIF_PIPE_TYPE_SHIFT", U.USBIF_PIPE_TYPE_SHIFT)]
    [TestCase("USBIF_PIPE_TYPE_ISOC", U.USBIF_PIPE_TYPE_ISOC)]
    [TestCase("USBIF_PIPE_TYPE_INT", U.USBIF_PIPE_TYPE_INT)]
    [TestCase("USBIF_PIPE_TYPE_CTRL", U.USBIF_PIPE_TYPE_CTRL)]
    [TestCase("USBIF_PIPE_TYPE_BULK", U.USBIF_PIPE_TYPE_BULK)]
    [TestCase("USBIF_MAX_SEGMENTS_PER_REQUEST", U.USBIF_MAX_SEGMENTS_PER_REQUEST)]
    [TestCase("USBIF_MAX_PORTNR", U.USBIF_MAX_PORTNR)]
    [TestCase("USBIF_RING_SIZE", U.USBIF_RING_SIZE)]
    [TestCase("USBIF_SHORT_NOT_OK", U.USBIF_SHORT_NOT_OK)]
    [TestCase("USBIF_STATUS_OK", U.USBIF_STATUS_OK)]
    [TestCase("USBIF_STATUS_NODEV", U.USBIF_STATUS_NODEV)]
    [TestCase("USBIF_STATUS_INVAL", U.USBIF_STATUS_INVAL)]
    [TestCase("USBIF_STATUS_STALL", U.USBIF_STATUS_STALL)]
    [TestCase("USBIF_STATUS_IOERROR", U.USBIF_STATUS_IOERROR)]
    [TestCase("USBIF_STATUS_BABBLE", U.USBIF_STATUS_BABBLE)]
    [TestCase("USBIF_STATUS_SHUTDOWN", U.USBIF_STATUS_SHUTDOWN)]
    [TestCase("USBIF_SPEED_NONE", U.USBIF_SPEED_NONE)]
    [TestCase("USBIF_SPEED_LOW", U.USBIF_SPEED_LOW)]
    [TestCase("USBIF_SPEED_FULL", U.USBIF_SPEED_FULL)]
    [TestCase("USBIF_SPEED_HIGH", U.USBIF_SPEED_HIGH)]
    [TestCase("USB_VER_UNKNOWN", U.USB_VER_UNKNOWN)]
    [TestCase("USB_VER_USB11", U.USB_VER_USB11)]
    [TestCase("USB_VER_USB20", U.USB_VER_USB20)]
    [TestCase("USB_VER_USB30", U.USB_VER_USB30)]
    public void Constant_MatchesHeader(string name, long value)
    {
        Assert.That(value, Is.EqualTo(C(name)));
    }
}
