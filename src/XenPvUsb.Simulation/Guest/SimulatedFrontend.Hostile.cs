using XenPvUsb.Rings;
using XenPvUsb.Usbif;
using XenPvUsb.Xen;
using static XenPvUsb.Usbif.Usbif;

namespace XenPvUsb.Simulation.Guest;

/// <summary>
/// Hooks for a hostile guest (the fuzzer): raw requests with any bytes and any id (duplicates
/// included), any index written into either ring's shared header, slots read and rewritten after
/// they were pushed. The strictness stays: a response is only accepted for an id that has a raw
/// request outstanding (one response per request sent with that id), anything else latches
/// <see cref="ProtocolError"/> as xen-hcd would. None of this changes how the frontend behaves
/// when the hooks are not used.
/// </summary>
public sealed partial class SimulatedFrontend
{
    public const int UrbReqProdOffset = RingIndex.ReqProdOffset;
    public const int UrbReqEventOffset = RingIndex.ReqEventOffset;
    public const int UrbRspProdOffset = RingIndex.RspProdOffset;
    public const int UrbRspEventOffset = RingIndex.RspEventOffset;

    private static readonly int s_urbEntrySize = Math.Max(System.Runtime.CompilerServices.Unsafe.SizeOf<usbif_urb_request>(),
        System.Runtime.CompilerServices.Unsafe.SizeOf<usbif_urb_response>());

    private readonly Dictionary<ushort, int> _rawExpected = new();
    private int _rawOutstanding;

    /// <summary>
    /// Called with every response to a raw request, on whichever thread consumed it (the event thread,
    /// or a caller of <see cref="PollResponses"/>), under the ring lock: it must not call back into
    /// the frontend.
    /// </summary>
    public Action<usbif_urb_response>? RawResponseSink { get; set; }

    /// <summary>Raw requests sent (or counted in with <see cref="ExpectRawResponse"/>) and not answered yet.</summary>
    public int RawOutstanding
    {
        get
        {
            lock (_ringLock)
            {
                return _rawOutstanding;
            }
        }
    }

    /// <summary>Urb ring slots a new request may take: the ring size less requests not yet answered.</summary>
    public int UrbRingFreeSlots
    {
        get
        {
            lock (_ringLock)
            {
                return _port is null ? 0 : (int)(_urbRing.Size - (_urbRing.ReqProdPvt - _urbRing.RspCons));
            }
        }
    }

    /// <summary>The urb ring's private indexes: requests produced (not necessarily pushed) and responses consumed.</summary>
    public (uint ReqProdPvt, uint RspCons) UrbRingIndexes
    {
        get
        {
            lock (_ringLock)
            {
                return (_urbRing.ReqProdPvt, _urbRing.RspCons);
            }
        }
    }

    /// <summary>The grant refs of the two ring pages (a hostile guest may name them as data segments).</summary>
    public (GrantRef Urb, GrantRef Conn) RingRefs => (_urbRef, _connRef);

    /// <summary>
    /// Writes a raw request into the next urb ring slot and counts one response expected for its id.
    /// With <paramref name="push"/> the new req_prod is published (without a kick: see <see cref="Kick"/>).
    /// Returns false, writing nothing, when the ring has no free slot or the frontend is dead.
    /// </summary>
    public bool TryPutRawRequest(in usbif_urb_request request, bool push = true)
    {
        lock (_ringLock)
        {
            if (_protocolError is not null || _stopping || _port is null || _urbRing.IsFull)
            {
                return false;
            }
            CountRawExpected(request.id);
            _urbRing.PutRequest(request);
            if (push)
            {
                _urbRing.PushRequestsAndCheckNotify();
            }
            return true;
        }
    }

    /// <summary>Publishes req_prod = the private producer (RING_PUSH_REQUESTS), without a kick.</summary>
    public void PushRawRequests()
    {
        lock (_ringLock)
        {
            if (_port is not null && !_stopping)
            {
                _urbRing.PushRequestsAndCheckNotify();
            }
        }
    }

    /// <summary>Counts one more response expected for <paramref name="id"/> (a slot the backend will consume after an index game).</summary>
    public void ExpectRawResponse(ushort id)
    {
        lock (_ringLock)
        {
            CountRawExpected(id);
        }
    }

    /// <summary>Sends an event to the backend, whatever req_event says.</summary>
    public void Kick()
    {
        lock (_ringLock)
        {
            if (_port is not null && !_stopping)
            {
                _port.Notify();
            }
        }
    }

    /// <summary>Consumes whatever responses are on either ring now (as if an event had arrived).</summary>
    public void PollResponses()
    {
        if (_port is not null && !_stopping)
        {
            ProcessResponses();
        }
    }

    /// <summary>Reads the urb ring slot of free-running index <paramref name="index"/> as the backend would see it.</summary>
    public unsafe usbif_urb_request ReadUrbSlot(uint index)
    {
        lock (_ringLock)
        {
            ThrowIfNoRing();
            return SharedRingPage.Read<usbif_urb_request>(SharedRingPage.Slot((byte*)_urbPage, index, _urbRing.Size, s_urbEntrySize));
        }
    }

    /// <summary>Rewrites the urb ring slot of free-running index <paramref name="index"/> (pushed or not), touching no index.</summary>
    public unsafe void WriteUrbSlot(uint index, in usbif_urb_request request)
    {
        lock (_ringLock)
        {
            ThrowIfNoRing();
            SharedRingPage.Write(SharedRingPage.Slot((byte*)_urbPage, index, _urbRing.Size, s_urbEntrySize), request);
        }
    }

    /// <summary>Reads a 32-bit word of the urb ring's shared header (req_prod 0, req_event 4, rsp_prod 8, rsp_event 12).</summary>
    public uint ReadUrbRingHeader(int offset) => ReadHeader(_urbPage, offset);

    /// <summary>Writes a 32-bit word of the urb ring's shared header; the frontend's private indexes stay as they were.</summary>
    public void WriteUrbRingHeader(int offset, uint value) => WriteHeader(_urbPage, offset, value);

    /// <summary>Reads a 32-bit word of the conn ring's shared header.</summary>
    public uint ReadConnRingHeader(int offset) => ReadHeader(_connPage, offset);

    /// <summary>Writes a 32-bit word of the conn ring's shared header.</summary>
    public void WriteConnRingHeader(int offset, uint value) => WriteHeader(_connPage, offset, value);

    private unsafe uint ReadHeader(nint page, int offset)
    {
        lock (_ringLock)
        {
            ThrowIfNoRing();
            return Volatile.Read(ref *(uint*)((byte*)page + CheckHeaderOffset(offset)));
        }
    }

    private unsafe void WriteHeader(nint page, int offset, uint value)
    {
        lock (_ringLock)
        {
            ThrowIfNoRing();
            Volatile.Write(ref *(uint*)((byte*)page + CheckHeaderOffset(offset)), value);
        }
    }

    private static int CheckHeaderOffset(int offset) =>
        offset is >= 0 and < RingIndex.HeaderSize && offset % 4 == 0 ? offset : throw new ArgumentOutOfRangeException(nameof(offset));

    private void ThrowIfNoRing()
    {
        if (_urbPage == 0)
        {
            throw new InvalidOperationException("frontend has no rings yet");
        }
    }

    private void CountRawExpected(ushort id)
    {
        _rawExpected[id] = _rawExpected.GetValueOrDefault(id) + 1;
        _rawOutstanding++;
    }

    /// <summary>Ring lock held. True if a raw response for <paramref name="id"/> was expected (and is now counted off).</summary>
    private bool TakeRawExpected(in usbif_urb_response rsp)
    {
        if (!_rawExpected.TryGetValue(rsp.id, out int n))
        {
            return false;
        }
        if (n == 1)
        {
            _rawExpected.Remove(rsp.id);
        }
        else
        {
            _rawExpected[rsp.id] = n - 1;
        }
        _rawOutstanding--;
        RawResponseSink?.Invoke(rsp);
        return true;
    }
}
