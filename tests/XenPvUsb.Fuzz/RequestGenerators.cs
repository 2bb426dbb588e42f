using CsCheck;
using static XenPvUsb.Usbif.Usbif;

namespace XenPvUsb.Fuzz;

/// <summary>
/// CsCheck generators of urb requests: every field random, or a valid request of a kind a guest
/// really sends (the standard requests the backend handles itself above all) mutated in 0-3 fields.
/// Composed from Gen.* so CsCheck can shrink them when a property over them fails.
/// </summary>
public static class RequestGenerators
{
    public const int PageSize = 4096;

    /// <summary>Pages of each kind the hostile guest keeps granted (segments pick one by index).</summary>
    public const int PoolPages = 8;

    private const uint Dir = USBIF_PIPE_DIR;

    private static readonly Gen<uint> s_anyPipeBits = Gen.Frequency(
        (3, Gen.UInt),
        (1, Gen.Int[0, 31].Select(b => 1u << b)),
        (1, Gen.OneOf(0u, 0x40u, 0x80000u, 0x20000000u, 0x3FF80000u, uint.MaxValue)));

    private static readonly Gen<ushort> s_edgeU16 = Gen.Frequency(
        (4, Gen.UShort),
        (3, Gen.OneOf<ushort>(0, 1, 2, 7, 8, 9, 13, 18, 31, 64, 255, 511, 512, 513, 4095, 4096, 4097, 8192, 32767, 32768, 65534, 65535)),
        (2, Gen.Int[0, 64].Select(i => (ushort)i)));

    public static readonly Gen<GrantKind> GrantKinds = Gen.Frequency(
        (20, Gen.Const(GrantKind.Writable)),
        (6, Gen.Const(GrantKind.ReadOnly)),
        (2, Gen.Const(GrantKind.Foreign)),
        (2, Gen.Const(GrantKind.Revoked)),
        (1, Gen.Const(GrantKind.Reserved)),
        (2, Gen.Const(GrantKind.Literal)));

    /// <summary>A segment anywhere: offsets and lengths at, inside and past the page.</summary>
    public static readonly Gen<SegSpec> AnySegment = Gen.Select(GrantKinds, Gen.Int[0, PoolPages - 1], s_edgeU16, s_edgeU16, Gen.UInt,
        (k, p, o, l, lit) => new SegSpec(k, (byte)p, o, l, lit));

    /// <summary>Every field random (ids, pipe, flags, length, union, up to 20 segments).</summary>
    public static readonly Gen<RequestSpec> Random = Gen.Select(
        Gen.Select(Gen.Enum<IdMode>(), Gen.UShort, Gen.Enum<PortSel>(), Gen.Int[0, 31], Gen.Enum<AddrSel>(), Gen.Int[0, 127]),
        Gen.Select(s_anyPipeBits, Gen.UShort, Gen.Enum<LengthMode>(), Gen.Int[-70000, 70000], Gen.Int[0, 20]),
        Gen.Select(Gen.ULong, Gen.Enum<UnlinkMode>(), AnySegment.Array[0, 17], Gen.Bool),
        (a, b, c) => new RequestSpec
        {
            Origin = "random",
            IdMode = a.Item1,
            Id = a.Item2,
            Port = a.Item3,
            PortValue = (byte)a.Item4,
            Addr = a.Item5,
            AddrValue = (byte)a.Item6,
            PipeRest = b.Item1,
            TransferFlags = b.Item2,
            LengthMode = b.Item3,
            LengthValue = b.Item4,
            SegCount = c.Item4 ? (ushort)b.Item5 : null,
            Union = c.Item1,
            Unlink = c.Item2,
            Segments = c.Item3,
            DataSegments = c.Item3.Length,
        });

    public static ulong Setup(byte bmRequestType, byte bRequest, ushort wValue, ushort wIndex, ushort wLength) =>
        bmRequestType | ((ulong)bRequest << 8) | ((ulong)wValue << 16) | ((ulong)wIndex << 32) | ((ulong)wLength << 48);

    private static uint PipeBits(int endpoint, bool isIn, uint type, bool unlink = false) =>
        (type << USBIF_PIPE_TYPE_SHIFT) | ((uint)(endpoint & 0xf) << USBIF_PIPE_EP_SHIFT) | (isIn ? Dir : 0) | (unlink ? USBIF_PIPE_UNLINK : 0);

    /// <summary>Data segments covering <paramref name="length"/> bytes from <paramref name="firstOffset"/>, as xen-hcd splits a buffer.</summary>
    public static SegSpec[] Buffer(int length, int firstOffset, GrantKind kind, int page)
    {
        var segs = new List<SegSpec>();
        int done = 0;
        int off = firstOffset % PageSize;
        while (done < length && segs.Count < 17)
        {
            int len = Math.Min(PageSize - off, length - done);
            segs.Add(new SegSpec(kind, (byte)((page + segs.Count) % PoolPages), (ushort)off, (ushort)len));
            done += len;
            off = 0;
        }
        return [.. segs];
    }

    private static readonly Gen<PortSel> s_devicePort = Gen.Frequency((6, Gen.Const(PortSel.Stick)), (3, Gen.Const(PortSel.Keyboard)), (1, Gen.Const(PortSel.Spare)));

    private static readonly Gen<int> s_smallOffset = Gen.Frequency((6, Gen.Const(0)), (2, Gen.Int[1, 4095]), (1, Gen.OneOf(4032, 4088, 4095)));

    private static RequestSpec Control(string origin, PortSel port, AddrSel addr, ulong setup, int dataLength, int offset, bool isIn) => new()
    {
        Origin = origin,
        Port = port,
        Addr = addr,
        PipeRest = PipeBits(0, isIn, USBIF_PIPE_TYPE_CTRL),
        Union = setup,
        Segments = dataLength == 0 ? [] : Buffer(dataLength, offset, isIn ? GrantKind.Writable : GrantKind.ReadOnly, 0),
        DataSegments = dataLength == 0 ? 0 : Buffer(dataLength, offset, GrantKind.Writable, 0).Length,
    };

    /// <summary>GET_DESCRIPTOR of any type and index, any wLength (the buffer is as long), at address 0 or the device's.</summary>
    public static readonly Gen<RequestSpec> GetDescriptor = Gen.Select(
        s_devicePort, Gen.Frequency((5, Gen.Const(AddrSel.Model)), (1, Gen.Const(AddrSel.Zero))),
        Gen.OneOf<ushort>(0x0100, 0x0200, 0x0300, 0x0301, 0x0302, 0x0303, 0x0600, 0x0700, 0x2100, 0x2200, 0x0f00, 0xff00), Gen.OneOf<ushort>(0, 0x0409, 1),
        Gen.Frequency((4, Gen.OneOf<ushort>(8, 9, 18, 32, 64, 255, 256)), (1, Gen.UShort[0, 9000])), s_smallOffset, Gen.Bool,
        (port, addr, wValue, wIndex, len, off, recipientInterface) => Control("get-descriptor", port, addr,
            Setup(recipientInterface ? (byte)0x81 : (byte)0x80, 6, wValue, wIndex, len), len, off, true));

    /// <summary>SET_ADDRESS, in range and out of it, at address 0 and at the current one.</summary>
    public static readonly Gen<RequestSpec> SetAddress = Gen.Select(
        s_devicePort, Gen.OneOf(AddrSel.Zero, AddrSel.Model),
        Gen.Frequency((5, Gen.UShort[1, 127]), (1, Gen.OneOf<ushort>(0, 128, 255, 0x8001, 0xffff))),
        (port, addr, a) => Control("set-address", port, addr, Setup(0x00, 5, a, 0, 0), 0, 0, false));

    public static readonly Gen<RequestSpec> SetConfiguration = Gen.Select(
        s_devicePort, Gen.Frequency((4, Gen.Const((ushort)1)), (1, Gen.OneOf<ushort>(0, 2, 255, 0x0101, 0xffff))),
        (port, c) => Control("set-configuration", port, AddrSel.Model, Setup(0x00, 9, c, 0, 0), 0, 0, false));

    public static readonly Gen<RequestSpec> SetInterface = Gen.Select(
        s_devicePort, Gen.OneOf<ushort>(0, 1, 2, 255, 0x100), Gen.OneOf<ushort>(0, 1, 2, 255, 0xffff),
        (port, alt, iface) => Control("set-interface", port, AddrSel.Model, Setup(0x01, 11, alt, iface, 0), 0, 0, false));

    /// <summary>CLEAR_FEATURE to an endpoint: ENDPOINT_HALT (wValue 0) on real, absent and odd endpoints, and other features.</summary>
    public static readonly Gen<RequestSpec> ClearFeature = Gen.Select(
        s_devicePort, Gen.Frequency((5, Gen.Const((ushort)0)), (1, Gen.OneOf<ushort>(1, 2, 0xffff))),
        Gen.OneOf<ushort>(0x81, 0x02, 0x01, 0x82, 0x00, 0x80, 0x0f, 0x8f, 0xff, 0x1081),
        Gen.Frequency((6, Gen.Const((byte)0x02)), (1, Gen.OneOf<byte>(0x00, 0x01, 0x03))),
        (port, feature, ep, recipient) => Control("clear-feature", port, AddrSel.Model, Setup(recipient, 1, feature, ep, 0), 0, 0, false));

    /// <summary>Other control requests: GET_STATUS, GET_CONFIGURATION, class (BOT reset, GET_MAX_LUN, HID SET_IDLE/SET_REPORT) and vendor ones.</summary>
    public static readonly Gen<RequestSpec> OtherControl = Gen.Select(
        s_devicePort,
        Gen.OneOf<(byte Type, byte Req, ushort Value, ushort Index, ushort Length)>(
            (0x80, 0, 0, 0, 2), (0x81, 0, 0, 0, 2), (0x82, 0, 0, 0x81, 2), (0x80, 8, 0, 0, 1), (0x81, 10, 0, 0, 1),
            (0x21, 0xff, 0, 0, 0), (0xa1, 0xfe, 0, 0, 1), (0x21, 0x0a, 0, 0, 0), (0x21, 0x09, 0x0200, 0, 1), (0xa1, 0x01, 0x0100, 0, 8),
            (0x00, 3, 1, 0, 0), (0x40, 0x55, 0, 0, 16), (0xc0, 0x55, 0, 0, 16), (0x20, 0, 0, 0, 0)),
        Gen.UShort,
        (port, r, v) => Control("other-control", port, AddrSel.Model, Setup(r.Type, r.Req, r.Value == 0 ? (ushort)0 : v, r.Index, r.Length),
            r.Length, 0, (r.Type & 0x80) != 0));

    private static byte[] Cbw(uint dataLength, bool dataIn, ReadOnlySpan<byte> cdb)
    {
        byte[] cbw = new byte[31];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(cbw, 0x43425355);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(cbw.AsSpan(4), 0x1234);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(cbw.AsSpan(8), dataLength);
        cbw[12] = dataIn ? (byte)0x80 : (byte)0;
        cbw[14] = (byte)cdb.Length;
        cdb.CopyTo(cbw.AsSpan(15));
        return cbw;
    }

    /// <summary>Well-formed CBWs for the stick's bulk OUT (the page content is the fuzzer's business; the kind is in the union of the spec).</summary>
    public static readonly byte[][] Cbws =
    [
        Cbw(0, false, [0, 0, 0, 0, 0, 0]),
        Cbw(36, true, [0x12, 0, 0, 0, 36, 0]),
        Cbw(8, true, [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        Cbw(18, true, [0x03, 0, 0, 0, 18, 0]),
        Cbw(4096, true, [0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0]),
        Cbw(512, false, [0x2a, 0, 0, 0, 0, 1, 0, 0, 1, 0]),
        Cbw(65536, true, [0x28, 0, 0, 0, 0, 16, 0, 0, 128, 0]),
        Cbw(192, true, [0x1a, 0, 0x3f, 0, 192, 0]),
    ];

    /// <summary>Bulk OUT: a CBW (index in the union's low byte, 0xff: random bytes) in a read-only page, or other data.</summary>
    public static readonly Gen<RequestSpec> BulkOut = Gen.Select(
        Gen.Frequency((6, Gen.Const(PortSel.Stick)), (1, Gen.Const(PortSel.Keyboard))),
        Gen.Frequency((6, Gen.Const(2)), (1, Gen.Int[0, 15])),
        Gen.Frequency((5, Gen.Int[0, Cbws.Length - 1]), (1, Gen.Const(0xff))),
        Gen.Frequency((5, Gen.Const(31)), (1, Gen.OneOf(1, 13, 512, 4096, 65536))), s_smallOffset,
        (port, ep, cbw, len, off) =>
        {
            SegSpec[] segs = Buffer(len, off, GrantKind.ReadOnly, 0);
            return new RequestSpec
            {
                Origin = "bulk-out",
                Port = port,
                PipeRest = PipeBits(ep, false, USBIF_PIPE_TYPE_BULK),
                Union = (ulong)cbw,
                Segments = segs,
                DataSegments = segs.Length,
            };
        });

    /// <summary>Bulk IN of any length up to 64 KiB (16 full pages: buffer_length 0), with and without SHORT_NOT_OK.</summary>
    public static readonly Gen<RequestSpec> BulkIn = Gen.Select(
        Gen.Frequency((6, Gen.Const(PortSel.Stick)), (1, Gen.Const(PortSel.Keyboard))),
        Gen.Frequency((6, Gen.Const(1)), (1, Gen.Int[0, 15])),
        Gen.Frequency((3, Gen.OneOf(13, 36, 512, 4096)), (2, Gen.Int[1, 8192]), (1, Gen.OneOf(61440, 65536))), s_smallOffset, Gen.Bool,
        (port, ep, len, off, sno) =>
        {
            SegSpec[] segs = Buffer(len, off, GrantKind.Writable, 0);
            return new RequestSpec
            {
                Origin = "bulk-in",
                Port = port,
                PipeRest = PipeBits(ep, true, USBIF_PIPE_TYPE_BULK),
                TransferFlags = sno ? USBIF_SHORT_NOT_OK : (ushort)0,
                Segments = segs,
                DataSegments = segs.Length,
            };
        });

    /// <summary>Interrupt IN (the keyboard's reports; it waits until a key is typed), with an interval in the union.</summary>
    public static readonly Gen<RequestSpec> InterruptIn = Gen.Select(
        Gen.Frequency((6, Gen.Const(PortSel.Keyboard)), (1, Gen.Const(PortSel.Stick))),
        Gen.Frequency((4, Gen.Const(8)), (1, Gen.OneOf(1, 64, 4096))), Gen.OneOf<ushort>(1, 8, 10, 255, 0xffff),
        (port, len, interval) => new RequestSpec
        {
            Origin = "interrupt-in",
            Port = port,
            PipeRest = PipeBits(1, true, USBIF_PIPE_TYPE_INT),
            Union = interval,
            Segments = Buffer(len, 0, GrantKind.Writable, 0),
            DataSegments = Buffer(len, 0, GrantKind.Writable, 0).Length,
        });

    /// <summary>
    /// Isochronous requests, mostly to the spare port's audio device (speaker OUT 0x01, microphone IN 0x82, both
    /// 192-byte packets, streaming once a SET_INTERFACE picks alternate setting 1): packets, descriptor segments,
    /// start frame, and descriptors laid out as drivers do or as a hostile guest would.
    /// </summary>
    public static readonly Gen<RequestSpec> Isochronous = Gen.Select(
        Gen.Frequency((6, Gen.Const(PortSel.Spare)), (1, Gen.Const(PortSel.Stick)), (1, Gen.Const(PortSel.Keyboard))),
        Gen.Frequency((4, Gen.Const((1, false))), (4, Gen.Const((2, true))), (1, Gen.Const((1, true))), (1, Gen.Const((2, false)))),
        Gen.OneOf<ushort>(0, 1, 3, 6, 8, 48, 128, 129, 256, 300, 1024, 1025, 0xffff),
        Gen.Select(Gen.Int[0, 3], Gen.Int[0, 4], Gen.UShort),
        Gen.Enum<IsoLayout>(),
        Gen.OneOf(0, 1, 8, 96, 192, 193, 1023, 4096),
        (port, ep, packets, sizes, layout, packetLength) =>
        {
            (int descSegs, int dataPages, ushort startFrame) = sizes;
            SegSpec[] data = dataPages == 0 ? [] : Buffer(dataPages * PageSize, 0, GrantKind.Writable, 0);
            SegSpec[] desc = Buffer(descSegs * PageSize, 0, GrantKind.Writable, 4);
            return new RequestSpec
            {
                Origin = "isochronous",
                Port = port,
                PipeRest = PipeBits(ep.Item1, ep.Item2, USBIF_PIPE_TYPE_ISOC),
                Union = 1UL | ((ulong)startFrame << 16) | ((ulong)packets << 32) | ((ulong)desc.Length << 48),
                Segments = [.. data, .. desc],
                DataSegments = data.Length,
                IsoLayout = layout,
                IsoPacketLength = packetLength,
            };
        });

    /// <summary>Unlinks: of a request in flight (its own pipe, or a wrong one) and of ids nobody has in flight.</summary>
    public static readonly Gen<RequestSpec> Unlink = Gen.Select(
        Gen.Frequency((5, Gen.Const(UnlinkMode.InFlight)), (1, Gen.Const(UnlinkMode.InFlightOwnPipe)), (2, Gen.Const(UnlinkMode.Literal))),
        s_devicePort, Gen.UShort, Gen.Int[0, 15], Gen.Bool,
        (mode, port, target, ep, stale) => new RequestSpec
        {
            Origin = "unlink",
            Port = port,
            Unlink = mode,
            PipeRest = PipeBits(ep, true, USBIF_PIPE_TYPE_BULK, unlink: true),
            Union = target,
            // xen-hcd leaves stale lengths and segments in a reused slot; the backend must ignore them.
            LengthMode = stale ? LengthMode.Literal : LengthMode.Consistent,
            LengthValue = stale ? 4096 : 0,
            Segments = stale ? [new SegSpec(GrantKind.Writable, 0, 0, 4096)] : [],
            DataSegments = stale ? 1 : 0,
            SegCount = 0,
        });

    /// <summary>A request of a kind a guest sends, valid as generated (but for the ones the backend must refuse anyway).</summary>
    public static readonly Gen<RequestSpec> Valid = Gen.Frequency(
        (10, GetDescriptor), (4, SetAddress), (4, SetConfiguration), (3, SetInterface), (4, ClearFeature), (3, OtherControl),
        (8, BulkOut), (8, BulkIn), (5, InterruptIn), (2, Isochronous), (6, Unlink));

    /// <summary>One mutation of a valid request: one field, one bit, one segment.</summary>
    public static readonly Gen<Func<RequestSpec, RequestSpec>> Mutation = Gen.Frequency(
        (4, Gen.Int[0, 31].Select<int, Func<RequestSpec, RequestSpec>>(bit => r => FlipPipeBit(r, bit))),
        (1, Gen.Const<Func<RequestSpec, RequestSpec>>(r => r with { PipeRest = r.PipeRest | USBIF_PIPE_UNLINK })),
        (2, Gen.Select(Gen.Enum<IdMode>(), Gen.UShort).Select<(IdMode, ushort), Func<RequestSpec, RequestSpec>>(t => r => r with { IdMode = t.Item1, Id = t.Item2 })),
        (2, Gen.Select(Gen.Enum<PortSel>(), Gen.Int[0, 31]).Select<(PortSel, int), Func<RequestSpec, RequestSpec>>(t => r => r with { Port = t.Item1, PortValue = (byte)t.Item2 })),
        (2, Gen.Select(Gen.Enum<AddrSel>(), Gen.Int[0, 127]).Select<(AddrSel, int), Func<RequestSpec, RequestSpec>>(t => r => r with { Addr = t.Item1, AddrValue = (byte)t.Item2 })),
        (2, Gen.Int[0, 20].Select<int, Func<RequestSpec, RequestSpec>>(n => r => r with { SegCount = (ushort)n })),
        (2, Gen.Select(Gen.OneOf(LengthMode.Delta, LengthMode.Literal), Gen.Frequency((3, Gen.OneOf(-1, 1, -4096, 4096, 65536)), (1, Gen.Int[-70000, 70000])))
            .Select<(LengthMode, int), Func<RequestSpec, RequestSpec>>(t => r => r with { LengthMode = t.Item1, LengthValue = t.Item2 })),
        (2, s_edgeU16.Select<ushort, Func<RequestSpec, RequestSpec>>(f => r => r with { TransferFlags = f })),
        (3, Gen.Select(Gen.Int[0, 7], Gen.Byte).Select<(int, byte), Func<RequestSpec, RequestSpec>>(t => r => r with { Union = r.Union ^ ((ulong)t.Item2 << (8 * t.Item1)) })),
        (1, s_edgeU16.Select<ushort, Func<RequestSpec, RequestSpec>>(w => r => r with { Union = (r.Union & 0x0000_FFFF_FFFF_FFFFUL) | ((ulong)w << 48) })),
        (4, Gen.Select(Gen.Int[0, 16], AnySegment).Select<(int, SegSpec), Func<RequestSpec, RequestSpec>>(t => r => ReplaceSegment(r, t.Item1, t.Item2))),
        (3, Gen.Select(Gen.Int[0, 16], GrantKinds).Select<(int, GrantKind), Func<RequestSpec, RequestSpec>>(t => r => ChangeGrantKind(r, t.Item1, t.Item2))),
        (2, Gen.Select(Gen.Int[0, 16], s_edgeU16, s_edgeU16).Select<(int, ushort, ushort), Func<RequestSpec, RequestSpec>>(t => r => MoveSegment(r, t.Item1, t.Item2, t.Item3))),
        (1, Gen.Const<Func<RequestSpec, RequestSpec>>(r => r with { Segments = [.. r.Segments, .. r.Segments], DataSegments = r.DataSegments * 2 })),
        (1, Gen.Const<Func<RequestSpec, RequestSpec>>(r => r with { Segments = r.Segments.Length == 0 ? [] : r.Segments[..^1], DataSegments = Math.Max(0, Math.Min(r.DataSegments, r.Segments.Length - 1)) })));

    /// <summary>A valid request with 0-3 mutations.</summary>
    public static readonly Gen<RequestSpec> Mutated = Gen.Select(Valid, Mutation.Array[0, 3], (r, ms) =>
    {
        foreach (Func<RequestSpec, RequestSpec> m in ms)
        {
            r = m(r);
        }
        return ms.Length == 0 ? r : r with { Origin = r.Origin + "+mut" };
    });

    /// <summary>What the hostile guest sends: mostly mutated valid requests, a third entirely random.</summary>
    public static readonly Gen<RequestSpec> Any = Gen.Frequency((2, Mutated), (1, Random));

    private static RequestSpec FlipPipeBit(RequestSpec r, int bit)
    {
        uint mask = 1u << bit;
        if ((mask & USBIF_PIPE_PORT_MASK) != 0)
        {
            return r with { Port = PortSel.BeyondNumPorts, PortValue = (byte)(PortNumber(r) ^ mask) };
        }
        if ((mask & (USBIF_PIPE_DEV_MASK << USBIF_PIPE_DEV_SHIFT)) != 0)
        {
            return r with { Addr = AddrSel.Literal, AddrValue = (byte)(r.AddrValue ^ (mask >> USBIF_PIPE_DEV_SHIFT)) };
        }
        return r with { PipeRest = r.PipeRest ^ mask };
    }

    private static int PortNumber(RequestSpec r) => r.Port switch
    {
        PortSel.Stick => 1,
        PortSel.Keyboard => 2,
        PortSel.Spare => 3,
        PortSel.Zero => 0,
        _ => r.PortValue,
    };

    private static RequestSpec ReplaceSegment(RequestSpec r, int index, SegSpec seg)
    {
        SegSpec[] segs = r.Segments.Length > index ? (SegSpec[])r.Segments.Clone() : [.. r.Segments, seg];
        segs[Math.Min(index, segs.Length - 1)] = seg;
        return r with { Segments = segs, DataSegments = Math.Max(r.DataSegments, Math.Min(segs.Length, r.DataSegments + (segs.Length - r.Segments.Length))) };
    }

    private static RequestSpec ChangeGrantKind(RequestSpec r, int index, GrantKind kind)
    {
        if (r.Segments.Length == 0)
        {
            return r;
        }
        SegSpec[] segs = (SegSpec[])r.Segments.Clone();
        int i = index % segs.Length;
        segs[i] = segs[i] with { Kind = kind };
        return r with { Segments = segs };
    }

    private static RequestSpec MoveSegment(RequestSpec r, int index, ushort offset, ushort length)
    {
        if (r.Segments.Length == 0)
        {
            return r;
        }
        SegSpec[] segs = (SegSpec[])r.Segments.Clone();
        int i = index % segs.Length;
        segs[i] = segs[i] with { Offset = offset, Length = length };
        return r with { Segments = segs };
    }
}
