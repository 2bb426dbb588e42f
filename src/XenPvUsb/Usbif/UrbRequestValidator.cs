using XenPvUsb.Usb;
using static XenPvUsb.Usbif.Usbif;

namespace XenPvUsb.Usbif;

/// <summary>
/// What the backend makes of one request copied out of the ring, before it looks at any state:
/// valid (a submit with its data length, or an unlink), or refused with a status and a reason.
/// </summary>
public readonly record struct UrbRequestVerdict(int Status, string? Reason, UsbifPipe Pipe, int DataLength)
{
    public bool IsValid => Reason is null;

    public bool IsUnlink => IsValid && Pipe.IsUnlink;

    public int Port => Pipe.Port;
}

/// <summary>
/// The one definition of a well-formed usbif_urb_request (usbif.h, pvusb-protocol.md §1.4–1.6), as a
/// pure function of the request and the controller's port count. The controller and the fuzzer
/// share it. Stateful checks (ids in flight, a device on the port, its address) stay with the
/// controller. Reasons are constant strings: refusing allocates nothing.
/// </summary>
public static class UrbRequestValidator
{
    public const string PortOutOfRange = "port out of range";
    public const string ReservedPipeBits = "undefined pipe bits set";
    public const string TooManySegments = "too many segments";
    public const string SegmentOutOfPage = "segment empty or beyond its page";
    public const string LengthMismatch = "buffer_length disagrees with the segments";
    public const string SetupBeyondBuffer = "wLength larger than the buffer";
    public const string IsoWithoutPackets = "isochronous request without packets or descriptor segments";
    public const string TooManyIsoPackets = "more isochronous packets than the backend serves in one request";
    public const string IsoDescriptorsBeyondSegments = "isochronous packet descriptors beyond their segments";
    public const string IsoPacketOutsideBuffer = "isochronous packet outside the buffer";
    public const string IsoPacketTooLong = "isochronous packet longer than any endpoint moves";
    public const string IsoPacketsBeyondBuffer = "isochronous packets longer together than the buffer";

    /// <summary>
    /// Packets one isochronous request may have. usbif.h sets no limit (the 16 segments do: up to 3840
    /// descriptors); the backend submits them as usbfs URBs of at most 128 packets each (devio.c's limit),
    /// so this allows 8 URBs per request. Linux class drivers send far fewer (snd-usb-audio up to 48 a URB,
    /// uvcvideo 32).
    /// </summary>
    public const int MaxIsoPacketsPerRequest = 1024;

    /// <summary>Bytes of one struct usb_iso_packet_descriptor as the guest lays it out (u32 offset, u32 length, u32 actual_length, s32 status).</summary>
    public const int IsoDescriptorSize = 16;

    /// <summary>devio.c's limit on one isochronous packet ("arbitrary limit need for USB 3.1 Gen2": 96 bursts of 1024 bytes).</summary>
    public const int MaxIsoPacketLength = 98304;

    private const int PageSize = 4096;

    public static UrbRequestVerdict Validate(in usbif_urb_request req, int numPorts)
    {
        var pipe = new UsbifPipe(req.pipe);
        if (pipe.Port < 1 || pipe.Port > numPorts)
        {
            return Refuse(PortOutOfRange, pipe);
        }
        if (pipe.HasReservedBits)
        {
            return Refuse(ReservedPipeBits, pipe);
        }
        if (pipe.IsUnlink)
        {
            // xen-hcd builds an unlink in a reused shadow slot: buffer_length, transfer_flags and seg[]
            // keep stale values (pvusb-protocol.md §3.8), so only the pipe and unlink_id mean anything.
            return new UrbRequestVerdict(USBIF_STATUS_OK, null, pipe, 0);
        }
        int nsegs = req.nr_buffer_segs;
        int total = nsegs;
        bool iso = pipe.Type == UsbTransferType.Isochronous;
        if (iso)
        {
            total += req.u_isoc_nr_frame_desc_segs;
        }
        if (nsegs > USBIF_MAX_SEGMENTS_PER_REQUEST || total > USBIF_MAX_SEGMENTS_PER_REQUEST)
        {
            return Refuse(TooManySegments, pipe);
        }
        int sum = 0;
        for (int i = 0; i < total; i++)
        {
            usbif_request_segment seg = req.seg[i];
            if (seg.length == 0 || seg.offset + seg.length > PageSize)
            {
                return Refuse(SegmentOutOfPage, pipe);
            }
            if (i < nsegs)
            {
                sum += seg.length;
            }
        }
        // buffer_length is a u16: Linux xen-hcd sends a 64 KiB buffer (16 full pages) as 0. The
        // segments are the truth; buffer_length must agree with them modulo 2^16.
        if ((sum & 0xFFFF) != req.buffer_length)
        {
            return Refuse(LengthMismatch, pipe);
        }
        if (pipe.Type == UsbTransferType.Control && (int)(req.u_ctrl >> 48) > sum)
        {
            // The data stage is wLength bytes of the buffer; QEMU's backend trusted wLength here.
            return Refuse(SetupBeyondBuffer, pipe);
        }
        if (iso)
        {
            int packets = req.u_isoc_number_of_packets;
            if (packets == 0 || req.u_isoc_nr_frame_desc_segs == 0)
            {
                return Refuse(IsoWithoutPackets, pipe);
            }
            if (packets > MaxIsoPacketsPerRequest)
            {
                return Refuse(TooManyIsoPackets, pipe);
            }
            int descriptorBytes = 0;
            for (int i = nsegs; i < total; i++)
            {
                descriptorBytes += req.seg[i].length;
            }
            if (descriptorBytes < packets * IsoDescriptorSize)
            {
                return Refuse(IsoDescriptorsBeyondSegments, pipe);
            }
        }
        return new UrbRequestVerdict(USBIF_STATUS_OK, null, pipe, sum);
    }

    /// <summary>
    /// Checks the packet descriptors of an isochronous request (copied out of the guest's pages, 16 bytes
    /// each) against its buffer of <paramref name="dataLength"/> bytes: every packet inside the buffer
    /// (overflow-safe: offset and length are the guest's u32s), none longer than usbfs moves, and all of
    /// them together no longer than the buffer (packets of real drivers never overlap; overlapping ones
    /// would make the device-side buffer, which holds the packets back to back, larger than the guest's).
    /// Fills <paramref name="offsets"/> and <paramref name="lengths"/> and returns null, or a reason.
    /// </summary>
    public static string? ValidateIsoPackets(ReadOnlySpan<byte> descriptors, int packets, int dataLength, Span<int> offsets, Span<int> lengths,
        out int totalLength)
    {
        totalLength = 0;
        long total = 0;
        for (int i = 0; i < packets; i++)
        {
            ReadOnlySpan<byte> d = descriptors.Slice(i * IsoDescriptorSize, IsoDescriptorSize);
            uint offset = System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(d);
            uint length = System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(d[4..]);
            if (length > MaxIsoPacketLength)
            {
                return IsoPacketTooLong;
            }
            if ((ulong)offset + length > (ulong)dataLength)
            {
                return IsoPacketOutsideBuffer;
            }
            total += length;
            if (total > dataLength)
            {
                return IsoPacketsBeyondBuffer;
            }
            offsets[i] = (int)offset;
            lengths[i] = (int)length;
        }
        totalLength = (int)total;
        return null;
    }

    private static UrbRequestVerdict Refuse(string reason, UsbifPipe pipe) => new(USBIF_STATUS_INVAL, reason, pipe, 0);
}
