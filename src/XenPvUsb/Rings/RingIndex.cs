namespace XenPvUsb.Rings;

/// <summary>
/// Pure index arithmetic of xen/include/public/io/ring.h. Indexes are free-running 32-bit
/// counters; all differences are taken modulo 2^32.
/// </summary>
public static class RingIndex
{
    /// <summary>Shared-ring header: req_prod, req_event, rsp_prod, rsp_event, 4-byte pvt, 44 bytes pad.</summary>
    public const int HeaderSize = 64;

    public const int ReqProdOffset = 0;
    public const int ReqEventOffset = 4;
    public const int RspProdOffset = 8;
    public const int RspEventOffset = 12;

    /// <summary>__CONST_RING_SIZE: entries that fit in a page after the header, rounded down to a power of two.</summary>
    public static int RingSize(int pageSize, int entrySize)
    {
        int fit = (pageSize - HeaderSize) / entrySize;
        int size = 1;
        while (size * 2 <= fit)
        {
            size *= 2;
        }
        return fit < 1 ? 0 : size;
    }

    /// <summary>RING_REQUEST_PROD_OVERFLOW: a frontend cannot have produced more requests than there are free slots.</summary>
    public static bool RequestProdOverflow(uint prod, uint rspProdPvt, uint size) => prod - rspProdPvt > size;

    /// <summary>RING_REQUEST_CONS_OVERFLOW: consuming at <paramref name="cons"/> would leave no slot for its response.</summary>
    public static bool RequestConsOverflow(uint cons, uint rspProdPvt, uint size) => cons - rspProdPvt >= size;

    /// <summary>
    /// A req_prod the backend can accept: it neither overflows the ring nor stands behind req_cons.
    /// The requests it announces, req_prod - req_cons (mod 2^32), fit in the slots not holding a
    /// request still waiting for its response.
    /// </summary>
    public static bool IsValidRequestProd(uint prod, uint reqCons, uint rspProdPvt, uint size) =>
        !RequestProdOverflow(prod, rspProdPvt, size) && prod - reqCons <= size - (reqCons - rspProdPvt);

    /// <summary>RING_RESPONSE_PROD_OVERFLOW, for the frontend side.</summary>
    public static bool ResponseProdOverflow(uint prod, uint rspCons, uint size) => prod - rspCons > size;

    /// <summary>XEN_RING_NR_UNCONSUMED_REQUESTS.</summary>
    public static uint UnconsumedRequests(uint reqProd, uint reqCons, uint rspProdPvt, uint size)
    {
        uint req = reqProd - reqCons;
        uint rsp = size - (reqCons - rspProdPvt);
        return req < rsp ? req : rsp;
    }

    /// <summary>The *_AND_CHECK_NOTIFY rule: notify if the event index lies in (old, new].</summary>
    public static bool NeedsNotify(uint oldProd, uint newProd, uint eventIndex) => newProd - eventIndex < newProd - oldProd;
}
