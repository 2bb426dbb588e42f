using Tmds.Linux;
using XenPvUsb.Simulation.Xen;
using XenPvUsb.Usb;
using XenPvUsb.Usbif;
using static XenPvUsb.Usbif.Usbif;

namespace XenPvUsb.Simulation.Guest;

public sealed partial class SimulatedFrontend
{
    /// <summary>
    /// Submits one URB and waits for its response. <paramref name="buffer"/> is the transfer buffer
    /// (OUT data is read from it, IN data written into it); for control transfers it is the data stage
    /// and <paramref name="setup"/> the SETUP packet. <paramref name="pageOffset"/> places the buffer at
    /// that offset in its first guest page, as an unaligned kmalloc buffer would be. Cancelling sends an
    /// unlink, as usbcore's usb_unlink_urb does.
    /// </summary>
    public async Task<UrbResult> SubmitAsync(UsbifPipe pipe, ulong setup, Memory<byte> buffer, bool shortNotOk = false,
        int pageOffset = 0, CancellationToken cancellationToken = default)
    {
        await _shadowSemaphore.WaitAsync(cancellationToken).ConfigureAwait(false);
        Shadow s;
        var tcs = new TaskCompletionSource<UrbResult>(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_ringLock)
        {
            ThrowIfDead();
            s = _shadows[_freeShadows.Pop()];
            s.Tcs = tcs;
            PutUrb(s, pipe, setup, buffer, shortNotOk, pageOffset);
        }
        using (cancellationToken.Register(() => TryUnlink(s, tcs)))
        {
            return await tcs.Task.ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Submits several URBs to one pipe together and waits for all of them, as usbcore's usb_sg_init
    /// does for a scatter-gather transfer on an HCD without scatter-gather (xen-hcd): one URB per
    /// buffer, all on the ring before the backend is told. Results are in buffer order.
    /// </summary>
    public async Task<UrbResult[]> SubmitManyAsync(UsbifPipe pipe, IReadOnlyList<Memory<byte>> buffers, bool shortNotOk,
        CancellationToken cancellationToken = default)
    {
        var tasks = new Task<UrbResult>[buffers.Count];
        var sources = new TaskCompletionSource<UrbResult>[buffers.Count];
        var shadows = new Shadow[buffers.Count];
        for (int i = 0; i < buffers.Count; i++)
        {
            await _shadowSemaphore.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        lock (_ringLock)
        {
            ThrowIfDead();
            for (int i = 0; i < buffers.Count; i++)
            {
                Shadow s = _shadows[_freeShadows.Pop()];
                var tcs = new TaskCompletionSource<UrbResult>(TaskCreationOptions.RunContinuationsAsynchronously);
                s.Tcs = tcs;
                tasks[i] = tcs.Task;
                sources[i] = tcs;
                shadows[i] = s;
                PutUrb(s, pipe, 0, buffers[i], shortNotOk, 0, push: i == buffers.Count - 1);
            }
        }
        using (cancellationToken.Register(() =>
        {
            for (int i = 0; i < shadows.Length; i++)
            {
                TryUnlink(shadows[i], sources[i]);
            }
        }))
        {
            return await Task.WhenAll(tasks).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Submits and waits on the calling thread, polling the event channel itself (no event thread
    /// may run). Used by the benchmark, which measures the backend rather than thread hand-offs.
    /// </summary>
    public unsafe UrbResult SubmitSync(UsbifPipe pipe, ulong setup, Memory<byte> buffer, bool shortNotOk = false)
    {
        if (_eventThread is not null)
        {
            throw new InvalidOperationException("SubmitSync needs a frontend connected without its event thread");
        }
        Shadow s;
        _shadowSemaphore.Wait();
        lock (_ringLock)
        {
            ThrowIfDead();
            s = _shadows[_freeShadows.Pop()];
            s.Tcs = null;
            s.Done = false;
            PutUrb(s, pipe, setup, buffer, shortNotOk, 0);
        }
        var pfd = new pollfd { fd = _port!.Fd, events = LibC.POLLIN };
        while (true)
        {
            ProcessResponses();
            lock (_ringLock)
            {
                if (s.Done)
                {
                    s.Done = false;
                    _freeShadows.Push(s.Index);
                    _shadowSemaphore.Release();
                    return s.Result;
                }
                ThrowIfDead();
            }
            LibC.poll(&pfd, 1, 1000);
            _port.ConsumePending();
        }
    }

    /// <summary>Puts a raw, possibly malformed request on the ring and waits for the response with its id (hostile-frontend tests).</summary>
    public Task<usbif_urb_response> SubmitRawAsync(usbif_urb_request request)
    {
        var tcs = new TaskCompletionSource<usbif_urb_response>(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_ringLock)
        {
            ThrowIfDead();
            _rawWaiters.Add(request.id, tcs);
            _urbRing.PutRequest(request);
            if (_urbRing.PushRequestsAndCheckNotify())
            {
                _port!.Notify();
            }
        }
        return tcs.Task;
    }

    /// <summary>Raw requests put on the ring together and published with one req_prod update (the backend sees them as one batch).</summary>
    public Task<usbif_urb_response[]> SubmitRawBatchAsync(IReadOnlyList<usbif_urb_request> requests)
    {
        var tasks = new Task<usbif_urb_response>[requests.Count];
        lock (_ringLock)
        {
            ThrowIfDead();
            for (int i = 0; i < requests.Count; i++)
            {
                var tcs = new TaskCompletionSource<usbif_urb_response>(TaskCreationOptions.RunContinuationsAsynchronously);
                _rawWaiters.Add(requests[i].id, tcs);
                tasks[i] = tcs.Task;
                _urbRing.PutRequest(requests[i]);
            }
            if (_urbRing.PushRequestsAndCheckNotify())
            {
                _port!.Notify();
            }
        }
        return Task.WhenAll(tasks);
    }

    /// <summary>Ids of the requests this frontend has in flight.</summary>
    public IReadOnlyList<ushort> InFlightRequestIds()
    {
        lock (_ringLock)
        {
            var ids = new List<ushort>();
            foreach (Shadow s in _shadows)
            {
                if (s.InFlight)
                {
                    ids.Add((ushort)s.Index);
                }
            }
            return ids;
        }
    }

    /// <summary>Writes a raw req_prod (hostile-frontend tests) and kicks the backend.</summary>
    public void CorruptRequestProducer(uint value)
    {
        lock (_ringLock)
        {
            _urbRing.ForceRequestProd(value);
            _port!.Notify();
        }
    }

    /// <summary>The urb ring's req_prod as this frontend last published it.</summary>
    public uint RequestProducer
    {
        get
        {
            lock (_ringLock)
            {
                return _urbRing.ReqProdPvt;
            }
        }
    }

    /// <summary>The conn ring's req_prod as this frontend last published it (512 + events answered).</summary>
    public uint ConnRequestProducer
    {
        get
        {
            lock (_ringLock)
            {
                return _connRing.ReqProdPvt;
            }
        }
    }

    /// <summary>Writes a raw conn ring req_prod (hostile-frontend tests) and kicks the backend.</summary>
    public void CorruptConnRequestProducer(uint value)
    {
        lock (_ringLock)
        {
            _connRing.ForceRequestProd(value);
            _port!.Notify();
        }
    }

    /// <summary>Grants one guest page to the backend and returns the ref (hostile tests build raw segments with it).</summary>
    public (nint Page, XenPvUsb.Xen.GrantRef Ref) GrantPage(bool readOnly)
    {
        nint page = GuestGrantTable.AllocPage();
        return (page, _grants.Grant(BackendDomain, page, readOnly));
    }

    private void ThrowIfDead()
    {
        if (_protocolError is not null)
        {
            throw new FrontendProtocolException(_protocolError);
        }
        if (_stopping || _port is null)
        {
            throw new InvalidOperationException("frontend is not connected");
        }
    }

    private unsafe void PutUrb(Shadow s, UsbifPipe pipe, ulong setup, Memory<byte> buffer, bool shortNotOk, int pageOffset, bool push = true)
    {
        bool control = pipe.Type == UsbTransferType.Control;
        bool isIn = control ? (setup & 0x80) != 0 : pipe.IsIn;
        int length = buffer.Length;
        int nsegs = length == 0 ? 0 : (pageOffset + length + PageSize - 1) / PageSize;
        if (nsegs > USBIF_MAX_SEGMENTS_PER_REQUEST)
        {
            _freeShadows.Push(s.Index);
            _shadowSemaphore.Release();
            throw new ArgumentException("xen-hcd refuses URBs needing more than 16 pages (-E2BIG)", nameof(buffer));
        }
        var req = new usbif_urb_request
        {
            id = (ushort)s.Index,
            nr_buffer_segs = (ushort)nsegs,
            pipe = pipe.Value,
            transfer_flags = (ushort)(shortNotOk ? USBIF_SHORT_NOT_OK : 0),
            buffer_length = (ushort)length, // truncates 64 KiB to 0, exactly as xen-hcd does
        };
        if (control)
        {
            req.u_ctrl = setup;
        }
        int done = 0;
        ReadOnlySpan<byte> src = buffer.Span;
        for (int i = 0; i < nsegs; i++)
        {
            if (s.Pages[i] == 0)
            {
                s.Pages[i] = GuestGrantTable.AllocPage();
            }
            int off = i == 0 ? pageOffset : 0;
            int len = Math.Min(PageSize - off, length - done);
            if (!isIn)
            {
                src.Slice(done, len).CopyTo(new Span<byte>((byte*)s.Pages[i] + off, len));
            }
            s.Grants[i] = _grants.Grant(BackendDomain, s.Pages[i], readOnly: !isIn);
            req.seg[i] = new usbif_request_segment { gref = s.Grants[i].Value, offset = (ushort)off, length = (ushort)len };
            done += len;
        }
        s.GrantCount = nsegs;
        s.Iso = null;
        s.UserBuffer = buffer;
        s.PageOffset = pageOffset;
        s.IsIn = isIn;
        s.InFlight = true;
        s.Pipe = pipe;
        _urbRing.PutRequest(req);
        if (push && _urbRing.PushRequestsAndCheckNotify())
        {
            _port!.Notify();
        }
    }

    private void TryUnlink(Shadow target, TaskCompletionSource<UrbResult> tcs)
    {
        lock (_ringLock)
        {
            if (target.Tcs != tcs || !target.InFlight || _stopping || _protocolError is not null || !_shadowSemaphore.Wait(0))
            {
                return;
            }
            Shadow u = _shadows[_freeShadows.Pop()];
            u.Tcs = null;
            u.Pipe = new UsbifPipe(target.Pipe.Value | USBIF_PIPE_UNLINK);
            u.InFlight = true;
            u.GrantCount = 0;
            u.Iso = null;
            u.UserBuffer = default;
            var req = new usbif_urb_request
            {
                id = (ushort)u.Index,
                pipe = target.Pipe.Value | USBIF_PIPE_UNLINK,
                u_unlink_unlink_id = (ushort)target.Index,
            };
            _urbRing.PutRequest(req);
            if (_urbRing.PushRequestsAndCheckNotify())
            {
                _port!.Notify();
            }
        }
    }

    /// <summary>Consumes responses on both rings (xenhcd_urb_request_done + xenhcd_conn_notify).</summary>
    private void ProcessResponses()
    {
        int releases = 0;
        List<(TaskCompletionSource<usbif_urb_response>, usbif_urb_response)>? raw = null;
        lock (_ringLock)
        {
            if (_protocolError is not null || _port is null)
            {
                return;
            }
            do
            {
                if (!_urbRing.TryReadResponseProd(out uint rp))
                {
                    SetProtocolError("urb ring rsp_prod overflow");
                    break;
                }
                while (_urbRing.RspCons != rp)
                {
                    usbif_urb_response rsp = _urbRing.CopyNextResponse();
                    if (_rawOutstanding > 0 && TakeRawExpected(rsp))
                    {
                        continue;
                    }
                    if (_rawWaiters.Remove(rsp.id, out TaskCompletionSource<usbif_urb_response>? w))
                    {
                        (raw ??= new()).Add((w, rsp));
                        continue;
                    }
                    if (rsp.id >= ShadowSlots || !_shadows[rsp.id].InFlight)
                    {
                        SetProtocolError($"response for request {rsp.id} not in flight");
                        break;
                    }
                    releases += CompleteShadow(_shadows[rsp.id], rsp);
                }
            }
            while (_protocolError is null && _urbRing.FinalCheckForResponses());

            if (_protocolError is null)
            {
                ProcessConnResponses();
            }
        }
        if (releases > 0)
        {
            _shadowSemaphore.Release(releases);
        }
        if (raw is not null)
        {
            foreach ((TaskCompletionSource<usbif_urb_response> w, usbif_urb_response r) in raw)
            {
                w.TrySetResult(r);
            }
        }
    }

    /// <summary>Returns how many shadow slots went back to the free list.</summary>
    private unsafe int CompleteShadow(Shadow s, usbif_urb_response rsp)
    {
        // Every grant must be back before the URB is given back: xen-hcd's hardening check.
        for (int i = 0; i < s.GrantCount; i++)
        {
            if (!_grants.TryEndAccess(s.Grants[i]))
            {
                SetProtocolError("backend didn't release grant");
                return 0;
            }
        }
        int actual = Math.Clamp(rsp.actual_length, 0, s.UserBuffer.Length);
        if (s.Iso is { } iso)
        {
            FinishIso(s, iso, rsp);
        }
        else if (s.IsIn && actual > 0)
        {
            Span<byte> dst = s.UserBuffer.Span;
            int copied = 0;
            for (int i = 0; copied < actual; i++)
            {
                int off = i == 0 ? s.PageOffset : 0;
                int len = Math.Min(PageSize - off, actual - copied);
                new ReadOnlySpan<byte>((byte*)s.Pages[i] + off, len).CopyTo(dst.Slice(copied, len));
                copied += len;
            }
        }
        s.InFlight = false;
        s.GrantCount = 0;
        s.Iso = null;
        s.UserBuffer = default;
        var result = new UrbResult(rsp.status, actual);
        if (s.Tcs is { } tcs)
        {
            s.Tcs = null;
            _freeShadows.Push(s.Index);
            tcs.TrySetResult(result);
            return 1;
        }
        if (s.Pipe.IsUnlink)
        {
            _freeShadows.Push(s.Index);
            return 1;
        }
        s.Result = result;
        s.Done = true;
        return 0;
    }

    private void ProcessConnResponses()
    {
        do
        {
            if (!_connRing.TryReadResponseProd(out uint rp))
            {
                SetProtocolError("conn ring rsp_prod overflow");
                return;
            }
            bool repost = false;
            while (_connRing.RspCons != rp)
            {
                usbif_conn_response rsp = _connRing.CopyNextResponse();
                if (rsp.portnum < 1 || rsp.portnum > NumPorts || rsp.speed > USBIF_SPEED_HIGH)
                {
                    SetProtocolError($"bad conn event port {rsp.portnum} speed {rsp.speed}");
                    return;
                }
                if (_portSpeed[rsp.portnum] != rsp.speed)
                {
                    Volatile.Write(ref _portSpeed[rsp.portnum], rsp.speed);
                    _portEvents.Writer.TryWrite(new PortEvent(rsp.portnum, rsp.speed));
                }
                _connRing.PutRequest(new usbif_conn_request { id = rsp.id });
                repost = true;
            }
            if (repost && _connRing.PushRequestsAndCheckNotify())
            {
                _port!.Notify();
            }
        }
        while (_connRing.FinalCheckForResponses());
    }
}
