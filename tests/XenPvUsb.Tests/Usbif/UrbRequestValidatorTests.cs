using global::XenPvUsb.Usbif;
using XenPvUsb.Usb;
using static global::XenPvUsb.Usbif.Usbif;

namespace XenPvUsb.Tests.Usbif;

[TestFixture]
public sealed class UrbRequestValidatorTests
{
    private const int Ports = 8;

    private static usbif_urb_request Bulk(params ushort[] lengths)
    {
        var req = new usbif_urb_request
        {
            id = 3,
            pipe = UsbifPipe.Create(1, 2, 1, true, UsbTransferType.Bulk).Value,
            nr_buffer_segs = (ushort)lengths.Length,
        };
        int sum = 0;
        for (int i = 0; i < lengths.Length; i++)
        {
            req.seg[i] = new usbif_request_segment { gref = (uint)(100 + i), offset = 0, length = lengths[i] };
            sum += lengths[i];
        }
        req.buffer_length = (ushort)sum;
        return req;
    }

    private static string? Reason(usbif_urb_request req) => UrbRequestValidator.Validate(in req, Ports).Reason;

    [Test]
    public void WellFormedBulk_IsValid_WithItsDataLength()
    {
        usbif_urb_request req = Bulk(4096, 4096, 512);
        UrbRequestVerdict v = UrbRequestValidator.Validate(in req, Ports);
        Assert.That(v.IsValid, Is.True);
        Assert.That(v.DataLength, Is.EqualTo(8704));
        Assert.That(v.Port, Is.EqualTo(1));
        Assert.That(v.IsUnlink, Is.False);
    }

    [Test]
    public void SixtyFourKiB_WithBufferLengthWrappedToZero_IsValid()
    {
        // xen-hcd puts a 64 KiB transfer_buffer_length into the u16 buffer_length: it arrives as 0.
        ushort[] pages = Enumerable.Repeat((ushort)4096, 16).ToArray();
        usbif_urb_request req = Bulk(pages);
        Assert.That(req.buffer_length, Is.Zero);
        UrbRequestVerdict v = UrbRequestValidator.Validate(in req, Ports);
        Assert.That(v.IsValid, Is.True);
        Assert.That(v.DataLength, Is.EqualTo(65536));
    }

    [TestCase(0)]
    [TestCase(9)]
    [TestCase(31)]
    public void PortOutsideTheController_IsRefused(int port)
    {
        usbif_urb_request req = Bulk(64);
        req.pipe = UsbifPipe.Create(port, 2, 1, true, UsbTransferType.Bulk).Value;
        Assert.That(Reason(req), Is.EqualTo(UrbRequestValidator.PortOutOfRange));
    }

    [TestCase(0x40u)]
    [TestCase(0x80000u)]
    [TestCase(0x2000_0000u)]
    public void UndefinedPipeBit_IsRefused(uint bit)
    {
        usbif_urb_request req = Bulk(64);
        req.pipe |= bit;
        Assert.That(Reason(req), Is.EqualTo(UrbRequestValidator.ReservedPipeBits));
    }

    [Test]
    public void Unlink_IgnoresTheStaleFieldsXenHcdLeavesInIt()
    {
        usbif_urb_request req = Bulk(64);
        req.pipe |= USBIF_PIPE_UNLINK;
        req.nr_buffer_segs = 0;
        req.buffer_length = 777;
        req.u_unlink_unlink_id = 5;
        UrbRequestVerdict v = UrbRequestValidator.Validate(in req, Ports);
        Assert.That(v.IsUnlink, Is.True);
        Assert.That(v.DataLength, Is.Zero);
    }

    [Test]
    public void SeventeenSegments_AreRefused()
    {
        usbif_urb_request req = Bulk(64);
        req.nr_buffer_segs = 17;
        Assert.That(Reason(req), Is.EqualTo(UrbRequestValidator.TooManySegments));
    }

    [Test]
    public void IsoDataPlusDescriptorSegmentsOverSixteen_AreRefused()
    {
        usbif_urb_request req = Bulk(Enumerable.Repeat((ushort)4096, 15).ToArray());
        req.pipe = UsbifPipe.Create(1, 2, 1, true, UsbTransferType.Isochronous).Value;
        req.u_isoc_number_of_packets = 8;
        req.u_isoc_nr_frame_desc_segs = 2;
        Assert.That(Reason(req), Is.EqualTo(UrbRequestValidator.TooManySegments));
    }

    [TestCase((ushort)0, (ushort)0, TestName = "Segment_OfLengthZero_IsRefused")]
    [TestCase((ushort)4000, (ushort)97, TestName = "Segment_EndingOneBytePastItsPage_IsRefused")]
    [TestCase((ushort)65535, (ushort)1, TestName = "Segment_WithItsOffsetBeyondThePage_IsRefused")]
    public void SegmentOutsideItsPage(ushort offset, ushort length)
    {
        usbif_urb_request req = Bulk(64);
        req.seg[0] = new usbif_request_segment { gref = 1, offset = offset, length = length };
        req.buffer_length = length;
        Assert.That(Reason(req), Is.EqualTo(UrbRequestValidator.SegmentOutOfPage));
    }

    [Test]
    public void Segment_EndingExactlyAtItsPageEnd_IsValid()
    {
        usbif_urb_request req = Bulk(96);
        req.seg[0] = new usbif_request_segment { gref = 1, offset = 4000, length = 96 };
        Assert.That(Reason(req), Is.Null);
    }

    [Test]
    public void BufferLengthDisagreeingWithTheSegments_IsRefused()
    {
        usbif_urb_request req = Bulk(512);
        req.buffer_length = 511;
        Assert.That(Reason(req), Is.EqualTo(UrbRequestValidator.LengthMismatch));
    }

    [Test]
    public void ControlWithWLengthBeyondTheBuffer_IsRefused()
    {
        usbif_urb_request req = Bulk(18);
        req.pipe = UsbifPipe.Create(1, 0, 0, true, UsbTransferType.Control).Value;
        req.u_ctrl = 0x80 | (6ul << 8) | (0x0100ul << 16) | (19ul << 48);
        Assert.That(Reason(req), Is.EqualTo(UrbRequestValidator.SetupBeyondBuffer));
        req.u_ctrl = 0x80 | (6ul << 8) | (0x0100ul << 16) | (18ul << 48);
        Assert.That(Reason(req), Is.Null);
    }

    [Test]
    public void ControlWithoutData_IsValid()
    {
        var req = new usbif_urb_request
        {
            pipe = UsbifPipe.Create(1, 0, 0, false, UsbTransferType.Control).Value,
            u_ctrl = 5ul << 8 | (2ul << 16),
        };
        UrbRequestVerdict v = UrbRequestValidator.Validate(in req, Ports);
        Assert.That(v.IsValid, Is.True);
        Assert.That(v.DataLength, Is.Zero);
    }

    [Test]
    public void IsochronousWithoutPacketsOrDescriptorPages_IsRefused()
    {
        usbif_urb_request req = Bulk(192);
        req.pipe = UsbifPipe.Create(1, 2, 1, true, UsbTransferType.Isochronous).Value;
        req.u_isoc_number_of_packets = 0;
        Assert.That(Reason(req), Is.EqualTo(UrbRequestValidator.IsoWithoutPackets));
        req.u_isoc_number_of_packets = 3;
        req.u_isoc_nr_frame_desc_segs = 0;
        Assert.That(Reason(req), Is.EqualTo(UrbRequestValidator.IsoWithoutPackets));
    }

    [Test]
    public void Refusals_AreInvalidStatus()
    {
        usbif_urb_request req = Bulk(64);
        req.nr_buffer_segs = 40;
        Assert.That(UrbRequestValidator.Validate(in req, Ports).Status, Is.EqualTo(USBIF_STATUS_INVAL));
    }
}
