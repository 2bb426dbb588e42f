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
    {
        _page = (byte*)page;
        _entrySize = Math.Max(sizeof(TRequest), sizeof(TResponse));
        Size = (uint)RingIndex.RingSize(pageSize, _entrySize);
        ReqCons = 0;
        RspProdPvt = 0;
    }

    public readonly uint Size { get; }

    public uint ReqCons { get; private set; }

    public uint RspProdPvt { get; private set; }

    public readonly bool IsAttached => _page != null;

    /// <summary>
    /// Snapshots the frontend's req_prod (then the read barrier) and checks it. Returns false when the
    /// frontend claims more requests than the ring can hold: that is ring-level nonsense.
    /// </summary>
    public readonly bool TryReadRequestProd(out uint reqProd)
    {
        reqProd = Volatile.Read(ref *(uint*)(_page + RingIndex.ReqProdOffset));
        return !RingIndex.RequestProdOverflow(reqProd, RspProdPvt, Size);
    }

    /// <summary>RING_COPY_REQUEST at req_cons, then advances req_cons.</summary>
    public TRequest CopyNextRequest()
    {
        byte* slot = SharedRingPage.Slot(_page, ReqCons++, Size, _entrySize);
        return SharedRingPage.Read<TRequest>(slot);
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
