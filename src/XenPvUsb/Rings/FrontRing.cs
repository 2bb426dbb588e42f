namespace XenPvUsb.Rings;

/// <summary>The frontend end of a Xen shared ring (ring.h FRONT_RING), used by the simulated guest.</summary>
public unsafe struct FrontRing<TRequest, TResponse>
    where TRequest : unmanaged
    where TResponse : unmanaged
{
    private readonly byte* _page;
    private readonly int _entrySize;

    /// <summary>
    /// XEN_FRONT_RING_INIT: initialises the shared header and attaches. A non-zero
    /// <paramref name="startIndex"/> starts both producers there (tests of index wrap-around).
    /// </summary>
    public FrontRing(nint page, int pageSize = 4096, uint startIndex = 0)
    {
        _page = (byte*)page;
        _entrySize = Math.Max(sizeof(TRequest), sizeof(TResponse));
        Size = (uint)RingIndex.RingSize(pageSize, _entrySize);
        new Span<byte>(_page, RingIndex.HeaderSize).Clear();
        *(uint*)(_page + RingIndex.ReqProdOffset) = startIndex;
        *(uint*)(_page + RingIndex.RspProdOffset) = startIndex;
        *(uint*)(_page + RingIndex.ReqEventOffset) = startIndex + 1;
        *(uint*)(_page + RingIndex.RspEventOffset) = startIndex + 1;
        ReqProdPvt = startIndex;
        RspCons = startIndex;
    }

    public readonly uint Size { get; }

    public uint ReqProdPvt { get; private set; }

    public uint RspCons { get; private set; }

    public readonly bool IsFull => ReqProdPvt - RspCons >= Size;

    public void PutRequest(in TRequest request)
    {
        SharedRingPage.Write(SharedRingPage.Slot(_page, ReqProdPvt++, Size, _entrySize), request);
    }

    /// <summary>RING_PUSH_REQUESTS_AND_CHECK_NOTIFY.</summary>
    public readonly bool PushRequestsAndCheckNotify() =>
        SharedRingPage.Push(_page, RingIndex.ReqProdOffset, RingIndex.ReqEventOffset, ReqProdPvt);

    /// <summary>Reads rsp_prod; false if the backend produced more responses than possible.</summary>
    public readonly bool TryReadResponseProd(out uint rspProd)
    {
        rspProd = Volatile.Read(ref *(uint*)(_page + RingIndex.RspProdOffset));
        return !RingIndex.ResponseProdOverflow(rspProd, RspCons, Size);
    }

    public TResponse CopyNextResponse()
    {
        return SharedRingPage.Read<TResponse>(SharedRingPage.Slot(_page, RspCons++, Size, _entrySize));
    }

    /// <summary>RING_FINAL_CHECK_FOR_RESPONSES.</summary>
    public readonly bool FinalCheckForResponses()
    {
        if (Volatile.Read(ref *(uint*)(_page + RingIndex.RspProdOffset)) != RspCons)
        {
            return true;
        }
        Volatile.Write(ref *(uint*)(_page + RingIndex.RspEventOffset), RspCons + 1);
        Interlocked.MemoryBarrier();
        return Volatile.Read(ref *(uint*)(_page + RingIndex.RspProdOffset)) != RspCons;
    }

    /// <summary>Test hook for hostile-frontend tests: writes a raw req_prod.</summary>
    public readonly void ForceRequestProd(uint value) => Volatile.Write(ref *(uint*)(_page + RingIndex.ReqProdOffset), value);
}
