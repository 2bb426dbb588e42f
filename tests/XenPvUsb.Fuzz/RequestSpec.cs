namespace XenPvUsb.Fuzz;

/// <summary>How a request's id is chosen when it is put on the ring.</summary>
public enum IdMode : byte
{
    /// <summary>An id no request in flight has.</summary>
    Fresh,

    /// <summary>The id of a request in flight (a duplicate), or fresh if none is.</summary>
    InFlight,

    /// <summary>The literal <see cref="RequestSpec.Id"/>.</summary>
    Literal,
}

/// <summary>Which root port the pipe names.</summary>
public enum PortSel : byte
{
    Stick,
    Keyboard,
    Spare,
    Empty,
    Zero,
    BeyondNumPorts,
}

/// <summary>Which device address the pipe names.</summary>
public enum AddrSel : byte
{
    /// <summary>The address the guest gave the device on that port (the fuzzer's model of it).</summary>
    Model,
    Zero,
    Literal,
}

/// <summary>What a segment's grant ref refers to.</summary>
public enum GrantKind : byte
{
    /// <summary>A page granted writable to dom0.</summary>
    Writable,

    /// <summary>A page granted read-only to dom0 (fine for OUT data, refused for IN).</summary>
    ReadOnly,

    /// <summary>A page granted to another domain, not to dom0.</summary>
    Foreign,

    /// <summary>A grant that was ended before the request was sent.</summary>
    Revoked,

    /// <summary>Refs 0-7, reserved in Linux guests and never granted here.</summary>
    Reserved,

    /// <summary>Any 32-bit value.</summary>
    Literal,

    /// <summary>The urb ring page itself (the guest corrupts its own ring: its own protocol errors are then expected).</summary>
    UrbRingPage,
}

public readonly record struct SegSpec(GrantKind Kind, byte Page, ushort Offset, ushort Length, uint Literal = 0);

/// <summary>The packet descriptors an isochronous request carries.</summary>
public enum IsoLayout : byte
{
    /// <summary>What the pages hold already (zeros, or another request's bytes).</summary>
    Stale,

    /// <summary>Packets of <see cref="RequestSpec.IsoPacketLength"/> bytes back to back from offset 0, as drivers lay them out.</summary>
    BackToBack,

    /// <summary>Every offset and length random 32-bit values.</summary>
    Random,

    /// <summary>All packets at offset 0, each as long as the buffer.</summary>
    Overlapping,
}

/// <summary>What to put in buffer_length.</summary>
public enum LengthMode : byte
{
    /// <summary>The sum of the data segments' lengths, modulo 2^16 (what xen-hcd sends).</summary>
    Consistent,

    /// <summary>That sum plus <see cref="RequestSpec.LengthValue"/> (as a signed delta).</summary>
    Delta,

    /// <summary>The literal <see cref="RequestSpec.LengthValue"/>.</summary>
    Literal,
}

/// <summary>What an unlink's unlink_id names.</summary>
public enum UnlinkMode : byte
{
    /// <summary>Not an unlink (the union is <see cref="RequestSpec.Union"/>).</summary>
    None,

    /// <summary>A request in flight, with its own pipe and the unlink bit (what xen-hcd sends).</summary>
    InFlight,

    /// <summary>A request in flight, but with this spec's pipe (another port, another endpoint...).</summary>
    InFlightOwnPipe,

    /// <summary>The literal unlink id in the union (in flight or not).</summary>
    Literal,
}

/// <summary>
/// One urb request as the generators describe it: concrete where a value is fixed, symbolic where
/// it depends on the run (ids in flight, the addresses the guest gave its devices, the grant refs
/// of its pages). <see cref="RequestMaterializer"/> turns it into a usbif_urb_request.
/// </summary>
public sealed record RequestSpec
{
    /// <summary>Which template (or "random") it came from, for the report.</summary>
    public string Origin { get; init; } = "random";

    public IdMode IdMode { get; init; }

    public ushort Id { get; init; }

    public PortSel Port { get; init; }

    /// <summary>The port number for <see cref="PortSel.Empty"/> and <see cref="PortSel.BeyondNumPorts"/>.</summary>
    public byte PortValue { get; init; }

    public AddrSel Addr { get; init; }

    public byte AddrValue { get; init; }

    /// <summary>Pipe bits other than the port (0-4) and the device (8-14): unlink, dir, endpoint, type, undefined bits.</summary>
    public uint PipeRest { get; init; }

    public ushort TransferFlags { get; init; }

    public LengthMode LengthMode { get; init; }

    public int LengthValue { get; init; }

    /// <summary>nr_buffer_segs; null: the number of data segments given.</summary>
    public ushort? SegCount { get; init; }

    /// <summary>The 8-byte union (setup packet, iso or interrupt fields, unlink id).</summary>
    public ulong Union { get; init; }

    public UnlinkMode Unlink { get; init; }

    /// <summary>seg[0..n): data segments then (iso) descriptor segments; at most 16 are written.</summary>
    public SegSpec[] Segments { get; init; } = [];

    /// <summary>Data segments among <see cref="Segments"/> (the rest are iso descriptor segments).</summary>
    public int DataSegments { get; init; }

    /// <summary>What an isochronous request's descriptor segments get written with (when they are the guest's writable pages).</summary>
    public IsoLayout IsoLayout { get; init; }

    /// <summary>Each packet's length for <see cref="IsoLayout.BackToBack"/>.</summary>
    public int IsoPacketLength { get; init; }

    /// <summary>True if this request can make the guest's own ring unusable (see <see cref="GrantKind.UrbRingPage"/>).</summary>
    public bool SelfHarm
    {
        get
        {
            foreach (SegSpec s in Segments)
            {
                if (s.Kind == GrantKind.UrbRingPage)
                {
                    return true;
                }
            }
            return false;
        }
    }

    public override string ToString()
    {
        string segs = string.Join(",", Array.ConvertAll(Segments, s => $"{s.Kind}:{s.Page}@{s.Offset}+{s.Length}"));
        return $"{Origin} id={IdMode}/{Id} port={Port}/{PortValue} addr={Addr}/{AddrValue} pipe=0x{PipeRest:x8} flags=0x{TransferFlags:x4} "
            + $"len={LengthMode}/{LengthValue} nsegs={SegCount?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "auto"} "
            + $"u=0x{Union:x16} unlink={Unlink} segs=[{segs}]";
    }
}
