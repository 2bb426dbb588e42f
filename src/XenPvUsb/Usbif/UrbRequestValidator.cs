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
        if (iso && (req.u_isoc_number_of_packets == 0 || req.u_isoc_nr_frame_desc_segs == 0))
        {
            return Refuse(IsoWithoutPackets, pipe);
        }
        return new UrbRequestVerdict(USBIF_STATUS_OK, null, pipe, sum);
    }

    private static UrbRequestVerdict Refuse(string reason, UsbifPipe pipe) => new(USBIF_STATUS_INVAL, reason, pipe, 0);
}
