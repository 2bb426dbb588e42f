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

    private static usbif_urb_request Iso(int packets, params ushort[] descriptorSegments)
    {
        usbif_urb_request req = Bulk(4096, 4096);
        req.pipe = UsbifPipe.Create(1, 2, 1, false, UsbTransferType.Isochronous).Value;
        req.u_isoc_number_of_packets = (ushort)packets;
        req.u_isoc_nr_frame_desc_segs = (ushort)descriptorSegments.Length;
        for (int i = 0; i < descriptorSegments.Length; i++)
        {
            req.seg[2 + i] = new usbif_request_segment { gref = 7, offset = (ushort)(i == 0 ? 4096 - descriptorSegments[0] : 0), length = descriptorSegments[i] };
        }
        return req;
    }

    [Test]
    public void IsochronousDescriptorsMustFitTheirSegments_WhicheverWayTheyStraddlePages()
    {
        Assert.That(Reason(Iso(3, 48)), Is.Null);
        Assert.That(Reason(Iso(3, 40, 8)), Is.Null, "a descriptor may straddle two pages");
        Assert.That(Reason(Iso(3, 40)), Is.EqualTo(UrbRequestValidator.IsoDescriptorsBeyondSegments));
        Assert.That(Reason(Iso(1024, 4096, 4096, 4096, 4096)), Is.Null);
        Assert.That(Reason(Iso(1025, 4096, 4096, 4096, 4096, 16)), Is.EqualTo(UrbRequestValidator.TooManyIsoPackets));
        Assert.That(UrbRequestValidator.Validate(Iso(3, 48), Ports).DataLength, Is.EqualTo(8192), "the data is the data segments only");
    }

    private static byte[] Descriptors(params (uint Offset, uint Length)[] packets)
    {
        byte[] d = new byte[16 * packets.Length];
        for (int i = 0; i < packets.Length; i++)
        {
            System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(d.AsSpan(16 * i), packets[i].Offset);
            System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(d.AsSpan((16 * i) + 4), packets[i].Length);
            System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(d.AsSpan((16 * i) + 8), 0xDEAD); // stale results are ignored
        }
        return d;
    }

    private static string? PacketReason(int dataLength, params (uint, uint)[] packets) =>
        UrbRequestValidator.ValidateIsoPackets(Descriptors(packets), packets.Length, dataLength, new int[packets.Length], new int[packets.Length], out _);

    [Test]
    public void IsochronousPackets_InsideTheBuffer_AreValid_WithTheirOffsetsAndLengths()
    {
        int[] offsets = new int[3];
        int[] lengths = new int[3];
        Assert.That(UrbRequestValidator.ValidateIsoPackets(Descriptors((0, 192), (4000, 192), (4192, 0)), 3, 4192, offsets, lengths, out int total), Is.Null);
        Assert.That((offsets, lengths, total), Is.EqualTo((new[] { 0, 4000, 4192 }, new[] { 192, 192, 0 }, 384)));
    }

    [TestCase(4193u, 0u, UrbRequestValidator.IsoPacketOutsideBuffer)]
    [TestCase(4000u, 193u, UrbRequestValidator.IsoPacketOutsideBuffer)]
    [TestCase(0xFFFFFFFFu, 1u, UrbRequestValidator.IsoPacketOutsideBuffer)]
    [TestCase(1u, 0xFFFFFFFFu, UrbRequestValidator.IsoPacketTooLong)]
    [TestCase(0u, 98305u, UrbRequestValidator.IsoPacketTooLong)]
    public void IsochronousPacket_OutsideTheBuffer_IsRefused(uint offset, uint length, string reason)
    {
        Assert.That(PacketReason(4192, (0, 100), (offset, length)), Is.EqualTo(reason));
    }

    [Test]
    public void OverlappingIsochronousPackets_LongerTogetherThanTheBuffer_AreRefused()
    {
        Assert.That(PacketReason(4096, (0, 2048), (0, 2048)), Is.Null, "overlap within the buffer's size is the guest's own business");
        Assert.That(PacketReason(4096, (0, 2048), (0, 2048), (0, 1)), Is.EqualTo(UrbRequestValidator.IsoPacketsBeyondBuffer));
    }

    [Test]
    public void Refusals_AreInvalidStatus()
    {
        usbif_urb_request req = Bulk(64);
        req.nr_buffer_segs = 40;
        Assert.That(UrbRequestValidator.Validate(in req, Ports).Status, Is.EqualTo(USBIF_STATUS_INVAL));
    }
}
