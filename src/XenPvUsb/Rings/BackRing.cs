namespace XenPvUsb.Rings;

/// <summary>
/// The backend end of a Xen shared ring over a mapped page (ring.h BACK_RING). The page is
/// shared with a guest that may rewrite it at any moment: every index is read once into a local,
/// and requests are copied out whole before anyone looks at them.
/// </summary>
public unsafe struct BackRing<TRequest, TResponse>
    where TRequest : unmanaged
    where TResponse : unmanaged
{
    private readonly byte* _page;
    private readonly int _entrySize;

    public BackRing(nint page, int pageSize = 4096)
        : this(page, 0, 0, pageSize)
    {
    }

    /// <summary>Attaches to a ring that is already running, at the given private indexes (a daemon re-adopting a connected frontend).</summary>
    public BackRing(nint page, uint reqCons, uint rspProdPvt, int pageSize = 4096)
    {
        _page = (byte*)page;
        _entrySize = Math.Max(sizeof(TRequest), sizeof(TResponse));
        Size = (uint)RingIndex.RingSize(pageSize, _entrySize);
        ReqCons = reqCons;
        RspProdPvt = rspProdPvt;
    }

    /// <summary>The shared rsp_prod as the frontend sees it (what was published).</summary>
    public readonly uint SharedResponseProd => Volatile.Read(ref *(uint*)(_page + RingIndex.RspProdOffset));

    /// <summary>The shared req_prod, unchecked.</summary>
    public readonly uint SharedRequestProd => Volatile.Read(ref *(uint*)(_page + RingIndex.ReqProdOffset));

    public readonly uint Size { get; }

    public uint ReqCons { get; private set; }

    public uint RspProdPvt { get; private set; }

    public readonly bool IsAttached => _page != null;

    /// <summary>
    /// Snapshots the frontend's req_prod (then the read barrier) and checks it. Returns false when the
    /// index is ring-level nonsense: more requests than the ring can hold (RING_REQUEST_PROD_OVERFLOW),
    /// or a producer that went back behind what was already consumed, or sideways by any other amount
    /// (then req_prod - req_cons, taken modulo 2^32, exceeds the free slots).
    /// </summary>
    public readonly bool TryReadRequestProd(out uint reqProd)
    {
        reqProd = Volatile.Read(ref *(uint*)(_page + RingIndex.ReqProdOffset));
        return RingIndex.IsValidRequestProd(reqProd, ReqCons, RspProdPvt, Size);
    }

    /// <summary>
    /// RING_COPY_REQUEST at req_cons, then advances req_cons; refused (false) when consuming it would
    /// overrun the responses not yet produced (RING_REQUEST_CONS_OVERFLOW), so a bad index can never
    /// make the caller copy more than a ring's worth.
    /// </summary>
    public bool TryCopyNextRequest(out TRequest request)
    {
        if (RingIndex.RequestConsOverflow(ReqCons, RspProdPvt, Size))
        {
            request = default;
            return false;
        }
        byte* slot = SharedRingPage.Slot(_page, ReqCons++, Size, _entrySize);
        request = SharedRingPage.Read<TRequest>(slot);
        return true;
    }

    public void PutResponse(in TResponse response)
    {
        SharedRingPage.Write(SharedRingPage.Slot(_page, RspProdPvt++, Size, _entrySize), response);
    }

    /// <summary>RING_PUSH_RESPONSES_AND_CHECK_NOTIFY.</summary>
    public readonly bool PushResponsesAndCheckNotify() =>
        SharedRingPage.Push(_page, RingIndex.RspProdOffset, RingIndex.RspEventOffset, RspProdPvt);

    /// <summary>
    /// RING_FINAL_CHECK_FOR_REQUESTS: if nothing is pending, ask for an event on the next request
    /// (req_event = req_cons + 1), then look once more so a request that raced in is not missed.
    /// </summary>
    public readonly bool FinalCheckForRequests()
    {
        if (HasUnconsumedRequests())
        {
            return true;
        }
        Volatile.Write(ref *(uint*)(_page + RingIndex.ReqEventOffset), ReqCons + 1);
        Interlocked.MemoryBarrier();
        return HasUnconsumedRequests();
    }

    public readonly bool HasUnconsumedRequests()
    {
        uint reqProd = Volatile.Read(ref *(uint*)(_page + RingIndex.ReqProdOffset));
        return RingIndex.UnconsumedRequests(reqProd, ReqCons, RspProdPvt, Size) != 0;
    }

    /// <summary>Free response slots: requests consumed but not yet answered are bounded by the ring size.</summary>
    public readonly uint Outstanding => ReqCons - RspProdPvt;
}
