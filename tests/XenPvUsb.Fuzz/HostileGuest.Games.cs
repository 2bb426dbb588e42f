using System.Globalization;
using XenPvUsb.Simulation.Devices;
using XenPvUsb.Simulation.Guest;
using XenPvUsb.Simulation.Xen;
using XenPvUsb.Usb;
using XenPvUsb.Usbif;
using XenPvUsb.Xen;
using XenPvUsb.XenStore;
using static XenPvUsb.Usbif.Usbif;

namespace XenPvUsb.Fuzz;

public sealed partial class HostileGuest
{
    private const int ConnRingSize = USB_CONN_RING_SIZE;

    private async Task RingGameAsync(RingGameOp g)
    {
        if (!_frontend.IsConnected)
        {
            return;
        }
        switch (g.Kind)
        {
            case RingGameKind.ReqProdMove:
                await ReqProdMoveAsync(g.Delta, g.InFlight).ConfigureAwait(false);
                break;
            case RingGameKind.ReqProdFlicker:
                {
                    (uint pvt, _) = _frontend.UrbRingIndexes;
                    if (unchecked((uint)g.Delta) is >= 1 and <= USB_URB_RING_SIZE)
                    {
                        // A forward flicker the backend may take as real: it consumes stale slots the guest
                        // then fills again behind its back. The guest's own ring is then inconsistent.
                        _selfHarm = true;
                    }
                    _frontend.WriteUrbRingHeader(SimulatedFrontend.UrbReqProdOffset, unchecked(pvt + (uint)g.Delta));
                    _frontend.WriteUrbRingHeader(SimulatedFrontend.UrbReqProdOffset, pvt);
                    _frontend.Kick();
                    string? state = await _world.WaitForStateAsync(BackendState, "5,6", 30).ConfigureAwait(false);
                    _stats.Count($"ring-games:req_prod flicker, {(state is null ? "not seen" : "seen: controller stopped")}");
                    break;
                }
            case RingGameKind.ReqEventScribble:
                _frontend.WriteUrbRingHeader(SimulatedFrontend.UrbReqEventOffset, g.Value);
                _stats.Count("ring-games:req_event scribbled");
                break;
            case RingGameKind.RspEventScribble:
                _frontend.WriteUrbRingHeader(SimulatedFrontend.UrbRspEventOffset, g.Value);
                _stats.Count("ring-games:rsp_event scribbled");
                break;
            case RingGameKind.ConnReqProdMove:
                await ConnReqProdMoveAsync(g.Delta).ConfigureAwait(false);
                break;
            case RingGameKind.ConnEventScribble:
                _frontend.WriteConnRingHeader((g.Value & 1) == 0 ? SimulatedFrontend.UrbReqEventOffset : SimulatedFrontend.UrbRspEventOffset, g.Value);
                _stats.Count("ring-games:conn ring event index scribbled");
                break;
            case RingGameKind.DataIntoRingPage:
                {
                    _selfHarm = true;
                    var spec = new RequestSpec
                    {
                        Origin = "data-into-ring-page",
                        Port = PortSel.Stick,
                        PipeRest = UsbifPipe.Create(0, 0, 0, true, UsbTransferType.Control).Value,
                        Union = RequestGenerators.Setup(0x80, 6, 0x0100, 0, 18),
                        Segments = [new SegSpec(GrantKind.UrbRingPage, 0, (ushort)(g.Value % (RequestGenerators.PageSize - 18)), 18)],
                        DataSegments = 1,
                    };
                    usbif_urb_request req = Materialize(spec, out InFlight entry);
                    if (Send(req, entry with { Ambiguous = true }, push: true))
                    {
                        _frontend.Kick();
                        await WaitQuietAsync(2, 50).ConfigureAwait(false);
                    }
                    _stats.Count("ring-games:IN data into the guest's own urb ring page");
                    await RecoverAsync("guest wrote into its own ring").ConfigureAwait(false);
                    break;
                }
        }
    }

    /// <summary>
    /// Moves req_prod by <paramref name="delta"/> with <paramref name="inFlight"/> interrupt INs waiting at
    /// the keyboard. With I requests unanswered, req_prod may lie anywhere in [pushed, pushed + 16 - I]
    /// (the backend then consumes the slots in between, stale or rewritten, and answers each); anywhere
    /// else it must stop the controller (ring.h RING_REQUEST_PROD_OVERFLOW, and no going back).
    /// </summary>
    private async Task ReqProdMoveAsync(long delta, int inFlight)
    {
        await UnlinkAllAsync().ConfigureAwait(false);
        if (!_frontend.IsConnected || InFlightCount != 0)
        {
            _stats.Count("ring-games:req_prod move skipped (ring not quiet)");
            return;
        }
        if (inFlight > 0)
        {
            // The keyboard must be configured and its reports drained for interrupt INs to wait there.
            await ResyncAsync().ConfigureAwait(false);
        }
        for (int i = 0; i < inFlight; i++)
        {
            var req = new usbif_urb_request
            {
                id = FreshId(),
                pipe = UsbifPipe.Create(KeyboardPort, _address[KeyboardPort], 1, true, UsbTransferType.Interrupt).Value,
                nr_buffer_segs = 1,
                buffer_length = 8,
            };
            req.seg[0] = new usbif_request_segment { gref = _writableRefs[6].Value, offset = (ushort)(i * 8), length = 8 };
            Send(req, Describe(req, "keyboard wait"), push: true);
        }
        // A fence: a request refused at once, answered after everything before it was consumed.
        var fence = new usbif_urb_request { id = FreshId(), pipe = UsbifPipe.Create(0, 0, 0, true, UsbTransferType.Control).Value };
        Send(fence, Describe(fence, "fence"), push: true);
        _frontend.Kick();
        ushort fenceId = fence.id;
        if (!await WaitAnsweredAsync(s_answerLimit, () => _inFlightCount[fenceId] == 0).ConfigureAwait(false) || !_frontend.IsConnected)
        {
            Finding("the fence of a req_prod game was not answered");
            await RecoverAsync("fence not answered").ConfigureAwait(false);
            return;
        }
        await Task.Delay(1).ConfigureAwait(false);
        _frontend.PollResponses();
        Drain();
        (uint pvt, uint rspCons) = _frontend.UrbRingIndexes;
        uint unanswered = pvt - rspCons;
        if (unanswered != (uint)InFlightCount)
        {
            _stats.Count("ring-games:req_prod move skipped (model and ring disagree)");
            await UnlinkAllAsync().ConfigureAwait(false);
            return;
        }
        uint free = USB_URB_RING_SIZE - unanswered;
        uint d = unchecked((uint)delta);
        string label = $"I={unanswered}, delta {Describe(d, free)}";
        if (d == 0)
        {
            _stats.Count("ring-games:req_prod move by 0");
            await UnlinkAllAsync().ConfigureAwait(false);
            return;
        }
        if (d <= free)
        {
            // Valid: the slots in between are requests. Half the time the stale bytes left in them
            // (old requests and responses), otherwise fresh random requests.
            bool stale = _random.Next(2) == 0;
            for (uint k = 0; k < d; k++)
            {
                usbif_urb_request r;
                InFlight entry;
                if (stale)
                {
                    r = _frontend.ReadUrbSlot(pvt + k);
                    entry = Describe(r, "stale slot") with { Ambiguous = true };
                }
                else
                {
                    r = Materialize(RequestGenerators.Any.Generate(new CsCheck.PCG((uint)_random.Next()), null!, out _), out entry);
                }
                Send(r, entry, push: false);
            }
            _frontend.PushRawRequests();
            _frontend.Kick();
            await WaitQuietAsync(2, 50).ConfigureAwait(false);
            string? state = await _world.ReadAsync(BackendState).ConfigureAwait(false);
            if (state != "4" || !_frontend.IsConnected)
            {
                Finding($"req_prod moved within the free slots ({label}) stopped the controller (backend state {state})");
            }
            _stats.Count($"ring-games:req_prod forward within the free slots ({(stale ? "stale slots" : "fresh requests")})");
            await UnlinkAllAsync().ConfigureAwait(false);
            return;
        }
        _frontend.WriteUrbRingHeader(SimulatedFrontend.UrbReqProdOffset, unchecked(pvt + d));
        _frontend.Kick();
        string? stopped = await _world.WaitForStateAsync(BackendState, "5,6", 3000).ConfigureAwait(false);
        if (stopped is null)
        {
            Finding($"req_prod moved out of range ({label}) did not stop the controller");
        }
        _stats.Count($"ring-games:req_prod out of range ({Describe(d, free)}), with {(unanswered == 0 ? "nothing" : "URBs")} in flight: controller stopped");
        await RecoverAsync("req_prod game").ConfigureAwait(false);
    }

    private static string Describe(uint d, uint free) => d switch
    {
        _ when d == free + 1 => "free+1",
        _ when d == free => "exactly free",
        0x80000000 => "2^31",
        0xFFFFFFFF => "-1 (behind req_cons)",
        _ when d > 0x80000000 => "backwards",
        _ when d < 64 => "ahead",
        _ => "far ahead",
    };

    /// <summary>
    /// Moves the conn ring's req_prod (legitimately 512 + the events answered) by <paramref name="delta"/>,
    /// then makes an event. Within [consumed, consumed + 512] it must be served (an event waits while
    /// no dummy request is there); elsewhere the controller must stop.
    /// </summary>
    private async Task ConnReqProdMoveAsync(long delta)
    {
        // The frontend re-posts (and so rewrites req_prod) for every event it consumes: wait until none is on its way.
        if (!await WaitForSpareEventAsync().ConfigureAwait(false))
        {
            Finding("a hotplug event on port 3 never arrived");
            return;
        }
        _frontend.PollResponses();
        uint pvt = _frontend.ConnRequestProducer;
        uint consumed = pvt - ConnRingSize;
        uint prod = unchecked(pvt + (uint)delta);
        bool valid = prod - consumed <= ConnRingSize;
        bool attach = !_spareAttached;
        _frontend.WriteConnRingHeader(SimulatedFrontend.UrbReqProdOffset, prod);
        await HotplugAsync(attach).ConfigureAwait(false);
        if (!valid)
        {
            string? stopped = await _world.WaitForStateAsync(BackendState, "5,6", 3000).ConfigureAwait(false);
            if (stopped is null)
            {
                Finding($"conn ring req_prod moved by {delta} (out of range) did not stop the controller");
            }
            _stats.Count("ring-games:conn ring req_prod out of range: controller stopped");
            await RecoverAsync("conn req_prod game").ConfigureAwait(false);
            return;
        }
        // Valid: put the frontend's own producer back (it would on its next re-post anyway) and kick.
        await Task.Delay(2).ConfigureAwait(false);
        _frontend.WriteConnRingHeader(SimulatedFrontend.UrbReqProdOffset, _frontend.ConnRequestProducer);
        _frontend.Kick();
        await WaitForSpareEventAsync().ConfigureAwait(false);
        string? state = await _world.ReadAsync(BackendState).ConfigureAwait(false);
        if (state != "4")
        {
            Finding($"conn ring req_prod moved by {delta} (in range) stopped the controller (backend state {state})");
        }
        else if ((_frontend.PortSpeed(SparePort) != 0) != attach)
        {
            Finding($"conn ring req_prod moved by {delta} (in range): the port 3 event never arrived");
        }
        _stats.Count("ring-games:conn ring req_prod within range: served");
    }

    private async Task StoreGameAsync(StoreGameOp g)
    {
        switch (g.Kind)
        {
            case StoreGameKind.FrontendState:
                await GuestWriteAsync($"{FrontendPath}/state", g.Value ?? "").ConfigureAwait(false);
                _stats.Count($"store-games:frontend state = '{g.Value}'");
                await Task.Delay(20).ConfigureAwait(false);
                break;
            case StoreGameKind.StateStorm:
                foreach (string v in g.Values)
                {
                    await GuestWriteAsync($"{FrontendPath}/state", v).ConfigureAwait(false);
                }
                _stats.Count("store-games:frontend state storm");
                await Task.Delay(30).ConfigureAwait(false);
                break;
            case StoreGameKind.RewriteNode:
                if (g.Value is null)
                {
                    await GuestRemoveAsync($"{FrontendPath}/{g.Node}").ConfigureAwait(false);
                }
                else
                {
                    await GuestWriteAsync($"{FrontendPath}/{g.Node}", g.Value).ConfigureAwait(false);
                }
                _stats.Count($"store-games:{g.Node} {(g.Value is null ? "removed" : "rewritten")} while connected");
                await Task.Delay(5).ConfigureAwait(false);
                break;
            case StoreGameKind.ConnectWithNodes:
                await ConnectWithNodesAsync(g).ConfigureAwait(false);
                break;
            case StoreGameKind.Reconnect:
                _stats.Count("store-games:clean reconnect");
                await RecoverAsync("reconnect game", force: true).ConfigureAwait(false);
                break;
        }
        // Whatever the daemon made of it, the guest goes on (and re-initialises if it was stopped).
        if (_frontend.IsConnected && await _world.ReadAsync(BackendState).ConfigureAwait(false) is not ("4" or "5" or "6"))
        {
            // e.g. the frontend said Initialising and the backend went back to InitWait: start afresh.
            await RecoverAsync("backend left Connected", force: true).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Closed, Initialising, then the guest writes the ring nodes itself (stale ones of the last
    /// connection, garbage, data pages as rings, the two refs swapped) and says Initialised/Connected.
    /// </summary>
    private async Task ConnectWithNodesAsync(StoreGameOp g)
    {
        (GrantRef oldUrb, GrantRef oldConn) = _frontend.RingRefs;
        await RetireFrontendAsync().ConfigureAwait(false);
        if (!await ReachInitWaitAsync().ConfigureAwait(false))
        {
            return;
        }
        GuestPort port = _world.Host.EventChannels.AllocUnbound(_guest.Id, DomId.Dom0);
        try
        {
            string urb = oldUrb.Value.ToString(CultureInfo.InvariantCulture);
            string conn = oldConn.Value.ToString(CultureInfo.InvariantCulture);
            string evtchn = port.Port.Value.ToString(CultureInfo.InvariantCulture);
            switch (g.Node)
            {
                case "data-page":
                    urb = _writableRefs[0].Value.ToString(CultureInfo.InvariantCulture);
                    conn = _writableRefs[1].Value.ToString(CultureInfo.InvariantCulture);
                    break;
                case "swap":
                    (urb, conn) = (conn, urb);
                    break;
                case "urb-ring-ref":
                    urb = g.Value ?? "";
                    break;
                case "conn-ring-ref":
                    conn = g.Value ?? "";
                    break;
                case "event-channel":
                    evtchn = g.Value ?? "";
                    break;
            }
            await GuestWriteAsync($"{FrontendPath}/urb-ring-ref", urb).ConfigureAwait(false);
            await GuestWriteAsync($"{FrontendPath}/conn-ring-ref", conn).ConfigureAwait(false);
            await GuestWriteAsync($"{FrontendPath}/event-channel", evtchn).ConfigureAwait(false);
            await GuestWriteAsync($"{FrontendPath}/state", g.Values[0]).ConfigureAwait(false);
            string? state = await _world.WaitForStateAsync(BackendState, "4,5,6", 500).ConfigureAwait(false);
            _stats.Count($"store-games:connect by hand with {g.Node}: backend {(state ?? "unchanged")}");
            port.Notify();
            await Task.Delay(5).ConfigureAwait(false);
        }
        finally
        {
            await RecoverAsync("connect by hand", force: true, frontendAlreadyGone: true).ConfigureAwait(false);
            port.Dispose();
        }
    }

    /// <summary>
    /// Disposes the frontend and waits until its teardown (which the backend's Closing may have started
    /// on its own) has written Closed: a late Closed would otherwise land after the Initialising of the
    /// next connection.
    /// </summary>
    private async Task RetireFrontendAsync()
    {
        SimulatedFrontend old = _frontend;
        old.RawResponseSink = null;
        await old.DisposeAsync().ConfigureAwait(false);
        try
        {
            await old.ShutdownCompleted.WaitAsync(SimulatedFrontend.RemovalTimeout + TimeSpan.FromSeconds(2)).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            Finding("the old frontend's teardown did not finish");
        }
    }

    /// <summary>Frontend Closed until the backend is Closed (or InitWait), then Initialising until it is InitWait.</summary>
    private async Task<bool> ReachInitWaitAsync()
    {
        string? be = null;
        for (int attempt = 0; attempt < 4; attempt++)
        {
            be = await _world.ReadAsync(BackendState).ConfigureAwait(false);
            if (be == "2")
            {
                return true;
            }
            if (be == "6")
            {
                await GuestWriteAsync($"{FrontendPath}/state", "1").ConfigureAwait(false);
                if (await _world.WaitForStateAsync(BackendState, "2", 3000).ConfigureAwait(false) is not null)
                {
                    return true;
                }
                continue;
            }
            await GuestWriteAsync($"{FrontendPath}/state", "6").ConfigureAwait(false);
            await _world.WaitForStateAsync(BackendState, "6,2", 3000).ConfigureAwait(false);
        }
        Fatal = $"{_where}: the hostile controller cannot be re-initialised (backend state {be})";
        _stats.Finding(Fatal);
        return false;
    }

    /// <summary>
    /// Re-initialises the hostile controller as a guest does after its HCD was removed: the old
    /// frontend goes (Closed, grants ended), the backend is walked back to InitWait, a fresh frontend
    /// connects with fresh rings, and both devices are enumerated again.
    /// </summary>
    private async Task RecoverAsync(string why, bool force = false, bool frontendAlreadyGone = false)
    {
        if (Fatal is not null)
        {
            return;
        }
        _stats.Count($"recoveries:{why}");
        if (!frontendAlreadyGone)
        {
            await RetireFrontendAsync().ConfigureAwait(false);
        }
        lock (_inFlight)
        {
            foreach (InFlight e in _inFlight)
            {
                _inFlightCount[e.Id]--;
            }
            _inFlight.Clear();
            _candidatePipes.Clear();
        }
        while (_responses.TryDequeue(out _))
        {
        }
        if (!await ReachInitWaitAsync().ConfigureAwait(false))
        {
            return;
        }
        Task<SimulatedFrontend> connecting = _guest.ConnectFrontendAsync(_devId, timeout: TimeSpan.FromSeconds(10));
        await GuestWriteAsync($"{FrontendPath}/state", "1").ConfigureAwait(false);
        SimulatedFrontend fe;
        try
        {
            fe = await connecting.ConfigureAwait(false);
        }
        catch (Exception e) when (e is OperationCanceledException or FrontendProtocolException or TimeoutException)
        {
            Fatal = $"{_where}: the hostile frontend could not connect again ({why}): {e.Message}";
            _stats.Finding(Fatal);
            return;
        }
        Interlocked.Increment(ref _stats.Reconnects);
        _selfHarm = false;
        try
        {
            await AdoptFrontendAsync(fe).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or TimeoutException or FrontendProtocolException or InvalidOperationException)
        {
            Fatal = $"{_where}: after re-initialising ({why}) the devices do not enumerate: {e.Message}";
            _stats.Finding(Fatal);
        }
        _ = force;
    }

    /// <summary>Takes a freshly connected frontend into use: waits for the ports, enumerates, hooks the raw responses.</summary>
    private async Task AdoptFrontendAsync(SimulatedFrontend fe)
    {
        _frontend = fe;
        fe.RawResponseSink = OnResponse;
        await fe.WaitForPortAsync(StickPort, true, TimeSpan.FromSeconds(10)).ConfigureAwait(false);
        await fe.WaitForPortAsync(KeyboardPort, true, TimeSpan.FromSeconds(10)).ConfigureAwait(false);
        _address[StickPort] = NextAddress();
        GuestUsbDevice stick = await GuestUsbDevice.EnumerateAsync(fe, StickPort, _address[StickPort]).WaitAsync(s_answerLimit).ConfigureAwait(false);
        // The stick's transport may be anywhere after the fuzzing: a Bulk-Only reset and both halts cleared set it straight.
        await stick.ControlAsync(0x21, 0xff, 0, 0, Memory<byte>.Empty).WaitAsync(s_answerLimit).ConfigureAwait(false);
        await stick.ClearHaltAsync(MassStorageDevice.BulkInEndpoint).WaitAsync(s_answerLimit).ConfigureAwait(false);
        await stick.ClearHaltAsync(MassStorageDevice.BulkOutEndpoint).WaitAsync(s_answerLimit).ConfigureAwait(false);
        _address[KeyboardPort] = NextAddress();
        await GuestUsbDevice.EnumerateAsync(fe, KeyboardPort, _address[KeyboardPort]).WaitAsync(s_answerLimit).ConfigureAwait(false);
        _address[SparePort] = 0;
    }

    private async Task GuestWriteAsync(string path, string value)
    {
        try
        {
            await _guest.Store.WriteAsync(path, value).ConfigureAwait(false);
        }
        catch (XenStoreException e)
        {
            _stats.Count($"store-games:guest write refused ({e.Message})");
        }
    }

    private async Task GuestRemoveAsync(string path)
    {
        try
        {
            await _guest.Store.RemoveAsync(path).ConfigureAwait(false);
        }
        catch (XenStoreException e)
        {
            _stats.Count($"store-games:guest remove refused ({e.Message})");
        }
    }

    /// <summary>After the run: the controller is re-initialised and the whole (read-only) stick read and compared.</summary>
    public async Task<string?> FinalCheckAsync()
    {
        _where = "final check";
        await RecoverAsync("final check", force: true).ConfigureAwait(false);
        if (Fatal is not null)
        {
            return Fatal;
        }
        GuestUsbDevice dev = await GuestUsbDevice.EnumerateAsync(_frontend, StickPort, NextAddress()).ConfigureAwait(false);
        await dev.ControlAsync(0x21, 0xff, 0, 0, Memory<byte>.Empty).ConfigureAwait(false);
        await dev.ClearHaltAsync(MassStorageDevice.BulkInEndpoint).ConfigureAwait(false);
        await dev.ClearHaltAsync(MassStorageDevice.BulkOutEndpoint).ConfigureAwait(false);
        var storage = new GuestMassStorage(dev);
        await storage.ReadCapacityAsync().ConfigureAwait(false);
        if (storage.BlockCount * storage.BlockSize != FuzzWorld.StickBytes)
        {
            return $"final check: the hostile stick reports {storage.BlockCount} blocks of {storage.BlockSize}";
        }
        byte[] buf = new byte[GuestMassStorage.BlocksPerCommand * 512];
        byte[] want = new byte[buf.Length];
        long blocks = FuzzWorld.StickBytes / 512;
        for (long lba = 0; lba < blocks; lba += GuestMassStorage.BlocksPerCommand)
        {
            int n = (int)Math.Min(GuestMassStorage.BlocksPerCommand, blocks - lba);
            await storage.ReadAsync((uint)lba, buf.AsMemory(0, n * 512)).ConfigureAwait(false);
            StickImage.Fill(want.AsSpan(0, n * 512), lba * 512, StickSeed);
            if (!buf.AsSpan(0, n * 512).SequenceEqual(want.AsSpan(0, n * 512)))
            {
                return $"final check: the hostile stick read back wrong at block {lba}";
            }
        }
        return _frontend.ProtocolError;
    }
}
