using CsCheck;

namespace XenPvUsb.Fuzz;

/// <summary>One step of the hostile guest.</summary>
public abstract record FuzzOp;

/// <summary>
/// Puts requests on the urb ring (as many as there are free slots), pushing after each or once at the
/// end, then kicks. With <see cref="RewriteAfterPush"/> each slot is rewritten (same id, other fields
/// from <see cref="Rewrites"/>) right after it was pushed, racing the backend's copy.
/// </summary>
public sealed record SubmitOp(RequestSpec[] Requests, bool PushEach, bool RewriteAfterPush, RequestSpec[] Rewrites) : FuzzOp;

/// <summary>Unlinks every request in flight (valid unlinks), then waits for all of them to be answered.</summary>
public sealed record UnlinkAllOp : FuzzOp;

/// <summary>Types keys on the hostile guest's keyboard (completes interrupt INs in flight).</summary>
public sealed record TypeOp(int Keys) : FuzzOp;

/// <summary>The toolstack attaches (or detaches) the spare device on port 3: conn ring events.</summary>
public sealed record HotplugOp(bool Attach) : FuzzOp;

/// <summary>Puts the devices back in a known state: address, configuration, halts cleared.</summary>
public sealed record ResyncOp : FuzzOp;

public enum RingGameKind
{
    /// <summary>req_prod moved by Delta from the pushed value, with InFlight interrupt INs waiting at the keyboard.</summary>
    ReqProdMove,

    /// <summary>req_prod set to a bad value and straight back (the backend may or may not see it).</summary>
    ReqProdFlicker,

    /// <summary>Random req_event written (the backend's field).</summary>
    ReqEventScribble,

    /// <summary>Random rsp_event written.</summary>
    RspEventScribble,

    /// <summary>The conn ring's req_prod moved by Delta, then an event is made (hotplug on port 3).</summary>
    ConnReqProdMove,

    /// <summary>Random conn ring req_event / rsp_event.</summary>
    ConnEventScribble,

    /// <summary>An IN request whose data segment is the urb ring page itself.</summary>
    DataIntoRingPage,
}

/// <summary>An index game on either ring.</summary>
public sealed record RingGameOp(RingGameKind Kind, long Delta, int InFlight, uint Value) : FuzzOp;

public enum StoreGameKind
{
    /// <summary>The frontend's state node set to a value (1..8, 0, garbage).</summary>
    FrontendState,

    /// <summary>urb-ring-ref / conn-ring-ref / event-channel rewritten (or removed) while connected.</summary>
    RewriteNode,

    /// <summary>Closed, Initialising, then Connected by hand with the node values given (garbage, stale, other pages).</summary>
    ConnectWithNodes,

    /// <summary>A clean reconnect: Closed, Initialising, a fresh frontend with fresh rings.</summary>
    Reconnect,

    /// <summary>Several state writes in a row without waiting.</summary>
    StateStorm,
}

/// <summary>A write of the hostile guest to its own frontend xenstore directory.</summary>
public sealed record StoreGameOp(StoreGameKind Kind, string Node, string? Value, string[] Values) : FuzzOp;

public static class FuzzOpGenerators
{
    private static readonly string[] s_stateValues = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "", "x", "-1", "04", " 4", "4 ", "4294967300", "65536"];

    private static readonly Gen<RequestSpec[]> s_batch = RequestGenerators.Any.Array[1, 16];

    public static readonly Gen<FuzzOp> Submit = Gen.Select(s_batch, Gen.Bool, Gen.Frequency((40, Gen.Const(false)), (1, Gen.Const(true))))
        .SelectMany(t => (t.Item3 ? RequestGenerators.Any.Array[1, 16] : Gen.Const(Array.Empty<RequestSpec>()))
            .Select(rewrites => (FuzzOp)new SubmitOp(t.Item1, t.Item2, t.Item3, rewrites)));

    private static readonly Gen<long> s_urbDelta = Gen.Frequency(
        (4, Gen.Int[1, 16].Select(i => (long)i)),
        (2, Gen.OneOf(-1L, -2L, -15L, -16L, -17L, 17L, 32L, 0x7FFFFFFFL, 0x80000000L, 0x80000001L, 0xFFFFFFFFL, 0L)),
        (1, Gen.UInt.Select(u => (long)u)));

    private static readonly Gen<long> s_connDelta = Gen.Frequency(
        (2, Gen.OneOf(1L, 2L, 511L, 512L, -1L, -511L, -512L, -513L, -600L, 0x80000000L, 0xFFFFFFFFL, 0L)),
        (1, Gen.Int[-600, 600].Select(i => (long)i)),
        (1, Gen.UInt.Select(u => (long)u)));

    public static readonly Gen<FuzzOp> RingGame = Gen.Frequency(
        (8, Gen.Select(s_urbDelta, Gen.Frequency((3, Gen.Const(0)), (2, Gen.Int[1, 8])), (d, k) => (FuzzOp)new RingGameOp(RingGameKind.ReqProdMove, d, k, 0))),
        (2, Gen.Select(s_urbDelta, Gen.Int[0, 4], (d, k) => (FuzzOp)new RingGameOp(RingGameKind.ReqProdFlicker, d, k, 0))),
        (2, Gen.UInt.Select(v => (FuzzOp)new RingGameOp(RingGameKind.ReqEventScribble, 0, 0, v))),
        (2, Gen.UInt.Select(v => (FuzzOp)new RingGameOp(RingGameKind.RspEventScribble, 0, 0, v))),
        (4, s_connDelta.Select(d => (FuzzOp)new RingGameOp(RingGameKind.ConnReqProdMove, d, 0, 0))),
        (1, Gen.UInt.Select(v => (FuzzOp)new RingGameOp(RingGameKind.ConnEventScribble, 0, 0, v))),
        (1, Gen.UShort.Select(v => (FuzzOp)new RingGameOp(RingGameKind.DataIntoRingPage, 0, 0, v))));

    private static readonly Gen<string?> s_nodeValue = Gen.Frequency(
        (3, Gen.UInt.Select(v => (string?)v.ToString(System.Globalization.CultureInfo.InvariantCulture))),
        (2, Gen.Int[0, 64].Select(v => (string?)v.ToString(System.Globalization.CultureInfo.InvariantCulture))),
        (1, Gen.OneOf<string?>(null, "", "x", "-1", "0x10", "4294967296", "1 2")));

    public static readonly Gen<FuzzOp> StoreGame = Gen.Frequency(
        (4, Gen.OneOf(s_stateValues).Select(v => (FuzzOp)new StoreGameOp(StoreGameKind.FrontendState, "state", v, []))),
        (3, Gen.Select(Gen.OneOf("urb-ring-ref", "conn-ring-ref", "event-channel"), s_nodeValue,
            (n, v) => (FuzzOp)new StoreGameOp(StoreGameKind.RewriteNode, n, v, []))),
        (3, Gen.Select(Gen.OneOf("urb-ring-ref", "conn-ring-ref", "event-channel", "stale", "data-page", "swap"), s_nodeValue, Gen.OneOf("3", "4"),
            (n, v, st) => (FuzzOp)new StoreGameOp(StoreGameKind.ConnectWithNodes, n, v, [st]))),
        (2, Gen.Const((FuzzOp)new StoreGameOp(StoreGameKind.Reconnect, "state", null, []))),
        (2, Gen.OneOf(s_stateValues).Array[2, 6].Select(vs => (FuzzOp)new StoreGameOp(StoreGameKind.StateStorm, "state", null, vs))));

    /// <summary>One step: mostly submissions; unlinks, typing, hotplug, resyncs, and now and then a ring or xenstore game.</summary>
    public static readonly Gen<FuzzOp> Op = Gen.Frequency(
        (200, Submit),
        (12, Gen.Const((FuzzOp)new UnlinkAllOp())),
        (8, Gen.Int[1, 4].Select(k => (FuzzOp)new TypeOp(k))),
        (3, Gen.Bool.Select(a => (FuzzOp)new HotplugOp(a))),
        (4, Gen.Const((FuzzOp)new ResyncOp())),
        (4, RingGame),
        (2, StoreGame));

    /// <summary>An episode: a run of steps generated from one seed (printed, so it can be replayed).</summary>
    public static readonly Gen<FuzzOp[]> Episode = Op.Array[8, 40];
}
