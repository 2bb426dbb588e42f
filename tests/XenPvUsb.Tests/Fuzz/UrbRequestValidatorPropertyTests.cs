using CsCheck;
using XenPvUsb.Usbif;
using static XenPvUsb.Usbif.Usbif;

namespace XenPvUsb.Tests.Fuzz;

/// <summary>
/// Properties of the validator the controller and the fuzzer share, over CsCheck-generated requests
/// (every field random, biased to the edges). CsCheck shrinks a failing request to a small one and
/// prints its seed.
/// </summary>
public sealed class UrbRequestValidatorPropertyTests
{
    private static readonly string[] s_reasons =
    [
        UrbRequestValidator.PortOutOfRange, UrbRequestValidator.ReservedPipeBits, UrbRequestValidator.TooManySegments,
        UrbRequestValidator.SegmentOutOfPage, UrbRequestValidator.LengthMismatch, UrbRequestValidator.SetupBeyondBuffer,
        UrbRequestValidator.IsoWithoutPackets, UrbRequestValidator.TooManyIsoPackets, UrbRequestValidator.IsoDescriptorsBeyondSegments,
    ];

    private static readonly Gen<ushort> s_edge = Gen.Frequency((3, Gen.UShort), (2, Gen.OneOf<ushort>(0, 1, 4095, 4096, 4097, 65535)), (2, Gen.UShort[0, 20]));

    private static readonly Gen<usbif_request_segment> s_segment = Gen.Select(Gen.UInt, s_edge, s_edge,
        (g, o, l) => new usbif_request_segment { gref = g, offset = o, length = l });

    private static readonly Gen<usbif_urb_request> s_request = Gen.Select(
        Gen.Select(Gen.UShort, s_edge, Gen.Frequency((2, Gen.UInt), (1, Gen.Int[0, 31].Select(b => 1u << b)), (1, Gen.UInt[0, 0xff])), Gen.UShort, s_edge, Gen.ULong),
        s_segment.Array[16],
        (h, segs) =>
        {
            var r = new usbif_urb_request { id = h.Item1, nr_buffer_segs = h.Item2, pipe = h.Item3, transfer_flags = h.Item4, buffer_length = h.Item5, u_ctrl = h.Item6 };
            for (int i = 0; i < 16; i++)
            {
                r.seg[i] = segs[i];
            }
            return r;
        });

    [Test]
    public void Verdict_IsAKnownReason_OrAValidRequestWithinTheProtocolsBounds()
    {
        s_request.Sample(req =>
        {
            UrbRequestVerdict v = UrbRequestValidator.Validate(in req, 8);
            if (!v.IsValid)
            {
                return v.Status == USBIF_STATUS_INVAL && Array.IndexOf(s_reasons, v.Reason) >= 0;
            }
            var pipe = new UsbifPipe(req.pipe);
            bool common = pipe.Port is >= 1 and <= 8 && !pipe.HasReservedBits;
            if (v.IsUnlink)
            {
                return common && v.DataLength == 0;
            }
            int sum = 0;
            for (int i = 0; i < req.nr_buffer_segs; i++)
            {
                sum += req.seg[i].length;
            }
            return common && req.nr_buffer_segs <= USBIF_MAX_SEGMENTS_PER_REQUEST && v.DataLength == sum && sum <= 16 * 4096
                && (sum & 0xffff) == req.buffer_length;
        }, iter: 20_000, seed: FuzzRunTests.DefaultSeed);
    }

    [Test]
    public void Verdict_DependsOnlyOnTheRequest()
    {
        // The controller validates the copy it took of the slot; validating twice must give the same answer.
        s_request.Sample(req => UrbRequestValidator.Validate(in req, 8) == UrbRequestValidator.Validate(in req, 8), iter: 5_000, seed: FuzzRunTests.DefaultSeed);
    }
}
