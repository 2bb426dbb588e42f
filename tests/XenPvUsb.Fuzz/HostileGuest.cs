using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using XenPvUsb.Backend;
using XenPvUsb.Simulation.Devices;
using XenPvUsb.Simulation.Guest;
using XenPvUsb.Simulation.Host;
using XenPvUsb.Simulation.Xen;
using XenPvUsb.Usbif;
using XenPvUsb.Xen;
using static XenPvUsb.Usbif.Usbif;

namespace XenPvUsb.Fuzz;

/// <summary>
/// The hostile guest: a controller with a (read-only) stick on port 1, a keyboard on port 2 and a
/// spare USB audio device (isochronous endpoints) the toolstack plugs into port 3 and out again. It plays <see cref="FuzzOp"/>s
/// against the real backend through the reference frontend's raw hooks, keeps a model of what it
/// has in flight, checks every response, and re-initialises its controller whenever a game stopped
/// it (the backend going Closing/Closed is then the right answer).
/// </summary>
public sealed partial class HostileGuest
{
    public const int StickPort = 1;
    public const int KeyboardPort = 2;
    public const int SparePort = 3;
    public const int NumPorts = 8;
    public const int StickSeed = 21;

    private static readonly int[] s_usbifStatuses =
        [USBIF_STATUS_OK, USBIF_STATUS_NODEV, USBIF_STATUS_INVAL, USBIF_STATUS_STALL, USBIF_STATUS_IOERROR, USBIF_STATUS_BABBLE, USBIF_STATUS_SHUTDOWN];

    private static readonly TimeSpan s_answerLimit = TimeSpan.FromSeconds(5);

    /// <summary>XENPVUSB_FUZZ_TRACE=1: every request and response on stderr (to replay one episode and read it).</summary>
    private static readonly bool s_trace = Environment.GetEnvironmentVariable("XENPVUSB_FUZZ_TRACE") == "1";

    private readonly FuzzWorld _world;
    private readonly SimulatedGuest _guest;
    private readonly int _devId;
    private readonly HidKeyboardDevice _keyboard;
    private readonly string _spareBusId;
    private readonly FuzzStats _stats;
    private readonly ConcurrentQueue<usbif_urb_response> _responses = new();
    private readonly SemaphoreSlim _responseSignal = new(0);
    private readonly List<InFlight> _inFlight = new();
    private readonly int[] _inFlightCount = new int[65536];
    private readonly Dictionary<ushort, HashSet<uint>> _candidatePipes = new();
    private readonly int[] _address = new int[NumPorts + 1];
    private readonly nint[] _writablePages = new nint[RequestGenerators.PoolPages];
    private readonly GrantRef[] _writableRefs = new GrantRef[RequestGenerators.PoolPages];
    private readonly nint[] _readOnlyPages = new nint[RequestGenerators.PoolPages];
    private readonly GrantRef[] _readOnlyRefs = new GrantRef[RequestGenerators.PoolPages];
    private readonly GrantRef[] _foreignRefs = new GrantRef[RequestGenerators.PoolPages];
    private readonly GrantRef[] _revokedRefs = new GrantRef[RequestGenerators.PoolPages];
    private SimulatedFrontend _frontend;
    private Random _random = new(1);
    private ushort _nextId = 100;
    private bool _selfHarm;
    private bool _spareAttached;
    private int _nextAddress = 10;
    private string _where = "";

    public HostileGuest(FuzzWorld world, SimulatedGuest guest, SimulatedFrontend frontend, int devId, HidKeyboardDevice keyboard, string spareBusId, FuzzStats stats)
    {
        _world = world;
        _guest = guest;
        _frontend = frontend;
        _devId = devId;
        _keyboard = keyboard;
        _spareBusId = spareBusId;
        _stats = stats;
    }

    /// <summary>Set when an invariant broke in a way that makes going on meaningless (the daemon faulted, the controller is wedged).</summary>
    public string? Fatal { get; private set; }

    public SimulatedFrontend Frontend => _frontend;

    private string BackendState => FuzzWorld.BackendStatePath(_guest.Id, _devId);

    private string FrontendPath => $"/local/domain/{_guest.Id.Value}/device/vusb/{_devId}";

    /// <summary>Grants the page pools, enumerates both devices, hooks the responses.</summary>
    public async Task InitAsync()
    {
        var foreign = new DomId(0x7ff0);
        GuestGrantTable grants = _guest.Grants;
        for (int i = 0; i < RequestGenerators.PoolPages; i++)
        {
            _writablePages[i] = GuestGrantTable.AllocPage();
            _writableRefs[i] = grants.Grant(DomId.Dom0, _writablePages[i], readOnly: false);
            _readOnlyPages[i] = GuestGrantTable.AllocPage();
            _readOnlyRefs[i] = grants.Grant(DomId.Dom0, _readOnlyPages[i], readOnly: true);
            _foreignRefs[i] = grants.Grant(foreign, GuestGrantTable.AllocPage(), readOnly: false);
            _revokedRefs[i] = grants.Grant(DomId.Dom0, GuestGrantTable.AllocPage(), readOnly: false);
            grants.TryEndAccess(_revokedRefs[i]);
        }
        await AdoptFrontendAsync(_frontend).ConfigureAwait(false);
    }

    /// <summary>Runs one episode. <paramref name="seed"/> names it in findings.</summary>
    public async Task RunEpisodeAsync(FuzzOp[] ops, string seed, int randomSeed)
    {
        _random = new Random(randomSeed);
        for (int i = 0; i < ops.Length && Fatal is null; i++)
        {
            _where = $"episode {seed} op {i} ({ops[i].GetType().Name})";
            long t0 = Stopwatch.GetTimestamp();
            await RunOpAsync(ops[i]).ConfigureAwait(false);
            _stats.Ops++;
            await CheckHealthAsync().ConfigureAwait(false);
            _stats.Count($"milliseconds per step kind:{ops[i].GetType().Name}", (long)Stopwatch.GetElapsedTime(t0).TotalMilliseconds);
        }
        if (Fatal is null)
        {
            _where = $"episode {seed} end";
            await UnlinkAllAsync().ConfigureAwait(false);
            await CheckHealthAsync().ConfigureAwait(false);
        }
        _stats.Episodes++;
    }

    private Task RunOpAsync(FuzzOp op) => op switch
    {
        SubmitOp s => SubmitAsync(s),
        UnlinkAllOp => UnlinkAllAsync(),
        TypeOp t => TypeAsync(t.Keys),
        HotplugOp h => HotplugAsync(h.Attach),
        ResyncOp => ResyncAsync(),
        RingGameOp g => RingGameAsync(g),
        StoreGameOp g => StoreGameAsync(g),
        _ => Task.CompletedTask,
    };

    private Task TypeAsync(int keys)
    {
        _keyboard.Type(new string('a', keys));
        _stats.Count("ops:type");
        return WaitQuietAsync(1, 20);
    }

    private async Task SubmitAsync(SubmitOp op)
    {
        _stats.Count("ops:submit");
        if (!_frontend.IsConnected)
        {
            return;
        }
        if (op.RewriteAfterPush)
        {
            // Racing the backend's copy can also overwrite a response the backend already put in that
            // slot: the guest corrupts its own ring then, so its own protocol errors are not findings.
            _selfHarm = true;
            _stats.Count("ring-games:slot rewritten after push");
        }
        int sent = 0;
        foreach (RequestSpec spec in op.Requests)
        {
            if (_frontend.UrbRingFreeSlots == 0)
            {
                await WaitQuietAsync(1, 5).ConfigureAwait(false);
                if (_frontend.UrbRingFreeSlots == 0)
                {
                    break;
                }
            }
            usbif_urb_request req = Materialize(spec, out InFlight entry);
            if (op.RewriteAfterPush)
            {
                entry = entry with { Ambiguous = true, SelfHarm = true };
            }
            if (!Send(req, entry, push: op.PushEach || op.RewriteAfterPush))
            {
                break;
            }
            sent++;
            if (op.RewriteAfterPush)
            {
                usbif_urb_request other = Materialize(op.Rewrites[sent % op.Rewrites.Length], out _);
                other.id = req.id;
                (uint pvt, _) = _frontend.UrbRingIndexes;
                _frontend.WriteUrbSlot(pvt - 1, other);
            }
        }
        _frontend.PushRawRequests();
        _frontend.Kick();
        await WaitQuietAsync(1, 20).ConfigureAwait(false);
        if (_frontend.UrbRingFreeSlots < 4)
        {
            // Requests that wait at a device (bulk IN with no command, interrupt IN with no key)
            // would fill the ring: unlink them, as a driver's timeout would.
            await UnlinkAllAsync().ConfigureAwait(false);
        }
    }

    /// <summary>Puts one request on the ring and records it in the model. False if the frontend is dead or the ring full.</summary>
    private bool Send(in usbif_urb_request req, InFlight entry, bool push)
    {
        lock (_inFlight)
        {
            if (_inFlightCount[entry.Id] > 0)
            {
                // A duplicate id: which of the answers is whose cannot be told, so none of them is checked
                // against its request (the backend must answer the duplicate INVAL and leave the first alone).
                entry = entry with { Ambiguous = true };
                if (!_candidatePipes.TryGetValue(entry.Id, out HashSet<uint>? pipes))
                {
                    _candidatePipes[entry.Id] = pipes = new();
                }
                pipes.Add(entry.Pipe);
                for (int i = 0; i < _inFlight.Count; i++)
                {
                    if (_inFlight[i].Id == entry.Id)
                    {
                        _inFlight[i] = _inFlight[i] with { Ambiguous = true };
                        pipes.Add(_inFlight[i].Pipe);
                    }
                }
                _stats.Count("ids:duplicate of an id in flight");
            }
            _inFlight.Add(entry);
            _inFlightCount[entry.Id]++;
        }
        if (!_frontend.TryPutRawRequest(req, push))
        {
            lock (_inFlight)
            {
                _inFlight.RemoveAt(_inFlight.Count - 1);
                _inFlightCount[entry.Id]--;
            }
            return false;
        }
        Interlocked.Increment(ref _stats.Requests);
        if (s_trace)
        {
            Console.Error.WriteLine($"  > id {req.id} pipe 0x{req.pipe:x8} nsegs {req.nr_buffer_segs} len {req.buffer_length} flags 0x{req.transfer_flags:x} u 0x{req.u_ctrl:x16} "
                + $"seg0 {req.seg[0].gref}@{req.seg[0].offset}+{req.seg[0].length} [{entry.Origin}; {entry.Verdict ?? "valid"}]{(push ? "" : " (no push)")}");
        }
        _stats.Count(entry.Verdict is null ? $"accepted by the validator:{entry.Origin}" : $"refused by the validator:{entry.Verdict}");
        return true;
    }

    private void OnResponse(usbif_urb_response rsp)
    {
        _responses.Enqueue(rsp);
        _responseSignal.Release();
    }

    /// <summary>Checks the responses that arrived against the model.</summary>
    private void Drain()
    {
        while (_responses.TryDequeue(out usbif_urb_response rsp))
        {
            Interlocked.Increment(ref _stats.Responses);
            if (s_trace)
            {
                Console.Error.WriteLine($"  < id {rsp.id} status {rsp.status} length {rsp.actual_length}");
            }
            InFlight e;
            lock (_inFlight)
            {
                int i = _inFlight.FindIndex(x => x.Id == rsp.id);
                if (i < 0)
                {
                    Finding($"response for id {rsp.id} (status {rsp.status}) that the fuzzer's model has not in flight");
                    continue;
                }
                e = _inFlight[i];
                _inFlight.RemoveAt(i);
                if (--_inFlightCount[rsp.id] == 0)
                {
                    _candidatePipes.Remove(rsp.id);
                }
            }
            _stats.Count($"response statuses:{StatusName(rsp.status)}");
            if (e.SelfHarm)
            {
                continue;
            }
            if (Array.IndexOf(s_usbifStatuses, rsp.status) < 0)
            {
                Finding($"status {rsp.status} for id {rsp.id} ({e.Origin}) is not a usbif status");
            }
            if (e.Ambiguous)
            {
                continue;
            }
            if (e.Verdict is not null && (rsp.status != USBIF_STATUS_INVAL || rsp.actual_length != 0))
            {
                Finding($"request {rsp.id} ({e.Origin}) refused by the validator ({e.Verdict}) was answered status {rsp.status}, length {rsp.actual_length}");
            }
            else if (e.IsUnlink && rsp.status is not (USBIF_STATUS_OK or USBIF_STATUS_NODEV))
            {
                Finding($"unlink {rsp.id} answered status {rsp.status}");
            }
            if (rsp.status == USBIF_STATUS_OK && e.Verdict is null && !e.IsUnlink && (e.Pipe & 0xC0000000) == 0x80000000 && (e.Union & 0xffff) == 0x0500)
            {
                // SET_ADDRESS done: the device on that port now answers at the new address.
                int port = (int)(e.Pipe & USBIF_PIPE_PORT_MASK);
                if (port <= NumPorts)
                {
                    _address[port] = (int)((e.Union >> 16) & 0x7f);
                }
            }
            if (rsp.actual_length < 0 || rsp.actual_length > e.MaxLength)
            {
                Finding($"request {rsp.id} ({e.Origin}) answered actual_length {rsp.actual_length}, its data stage is {e.MaxLength} bytes");
            }
        }
    }

    private static string StatusName(int status) => status switch
    {
        USBIF_STATUS_OK => "0 OK",
        USBIF_STATUS_NODEV => "-19 NODEV",
        USBIF_STATUS_INVAL => "-22 INVAL",
        USBIF_STATUS_STALL => "-32 STALL",
        USBIF_STATUS_IOERROR => "-71 IOERROR",
        USBIF_STATUS_BABBLE => "-75 BABBLE",
        USBIF_STATUS_SHUTDOWN => "-108 SHUTDOWN",
        _ => status.ToString(CultureInfo.InvariantCulture),
    };

    /// <summary>Waits until nothing is in flight, or nothing arrived for <paramref name="idleMs"/>, or <paramref name="maxMs"/> passed.</summary>
    private async Task WaitQuietAsync(int idleMs, int maxMs)
    {
        long start = Stopwatch.GetTimestamp();
        while (true)
        {
            Drain();
            if (InFlightCount == 0 || !_frontend.IsConnected || Stopwatch.GetElapsedTime(start).TotalMilliseconds > maxMs)
            {
                return;
            }
            if (!await _responseSignal.WaitAsync(idleMs).ConfigureAwait(false))
            {
                // Maybe no event came (the guest scribbled rsp_event): look at the ring anyway.
                _frontend.PollResponses();
                Drain();
                if (!await _responseSignal.WaitAsync(0).ConfigureAwait(false))
                {
                    return;
                }
            }
        }
    }

    /// <summary>Waits until the given ids (or everything) were answered; false after <paramref name="limit"/>.</summary>
    private async Task<bool> WaitAnsweredAsync(TimeSpan limit, Func<bool>? done = null)
    {
        long start = Stopwatch.GetTimestamp();
        while (true)
        {
            Drain();
            if ((done?.Invoke() ?? InFlightCount == 0) || !_frontend.IsConnected)
            {
                return true;
            }
            if (Stopwatch.GetElapsedTime(start) > limit)
            {
                return false;
            }
            if (!await _responseSignal.WaitAsync(5).ConfigureAwait(false))
            {
                _frontend.PollResponses();
            }
        }
    }

    private int InFlightCount
    {
        get
        {
            lock (_inFlight)
            {
                return _inFlight.Count;
            }
        }
    }

    /// <summary>Unlinks everything in flight (valid unlinks, as xen-hcd sends them) and waits until all of it was answered.</summary>
    private async Task UnlinkAllAsync()
    {
        _stats.Count("ops:unlink all");
        await WaitQuietAsync(1, 10).ConfigureAwait(false);
        (ushort Id, uint Pipe)[] targets;
        lock (_inFlight)
        {
            // An id sent more than once while in flight: the request still waiting may be any of them, so
            // each of their pipes gets an unlink (the ones for the wrong port are answered NODEV).
            targets = [.. _inFlight.SelectMany(e => _candidatePipes.TryGetValue(e.Id, out HashSet<uint>? pipes) ? pipes.Select(p => (e.Id, p)) : [(e.Id, e.Pipe)]).Distinct()];
        }
        foreach ((ushort Id, uint Pipe) t in targets)
        {
            // The ring may be full of unlinks already: each is answered at once, so wait for room rather
            // than give up (an unlink never sent is an answer never owed).
            long start = Stopwatch.GetTimestamp();
            while (true)
            {
                if (!_frontend.IsConnected)
                {
                    return;
                }
                if (_frontend.UrbRingFreeSlots > 0)
                {
                    var req = new usbif_urb_request { id = FreshId(), pipe = t.Pipe | USBIF_PIPE_UNLINK, u_unlink_unlink_id = t.Id };
                    if (Send(req, Describe(req, "unlink"), push: true))
                    {
                        break;
                    }
                }
                if (Stopwatch.GetElapsedTime(start) > s_answerLimit)
                {
                    Finding($"the urb ring stayed full for {s_answerLimit.TotalSeconds} s while unlinking everything in flight");
                    await RecoverAsync("ring full").ConfigureAwait(false);
                    return;
                }
                _frontend.Kick();
                await WaitQuietAsync(2, 50).ConfigureAwait(false);
                _frontend.PollResponses();
                Drain();
            }
        }
        _frontend.Kick();
        // A guest that rewrote its own pushed slots may have destroyed answers: no point waiting long for those.
        if (!await WaitAnsweredAsync(_selfHarm ? TimeSpan.FromMilliseconds(300) : s_answerLimit).ConfigureAwait(false))
        {
            if (_selfHarm)
            {
                // The guest overwrote slots it had pushed: it may have destroyed the answers itself.
                await RecoverAsync("answers lost after the guest rewrote its own slots").ConfigureAwait(false);
                return;
            }
            string stuck;
            lock (_inFlight)
            {
                stuck = string.Join("; ", _inFlight.Select(e => $"id {e.Id} {e.Origin} pipe 0x{e.Pipe:x8}"));
            }
            (uint pvt, uint cons) = _frontend.UrbRingIndexes;
            Finding($"requests not answered {s_answerLimit.TotalSeconds} s after their unlink: {stuck} (frontend expects {_frontend.RawOutstanding}; "
                + $"req_prod pvt {pvt} shared {_frontend.ReadUrbRingHeader(0)}, req_event {_frontend.ReadUrbRingHeader(4)}, rsp_prod {_frontend.ReadUrbRingHeader(8)}, rsp_cons {cons}, "
                + $"backend {await _world.ReadAsync(BackendState).ConfigureAwait(false)})");
            await RecoverAsync("requests never answered").ConfigureAwait(false);
        }
    }

    private ushort FreshId()
    {
        while (true)
        {
            ushort id = _nextId++;
            if (_inFlightCount[id] == 0)
            {
                return id;
            }
        }
    }

    private async Task HotplugAsync(bool attach)
    {
        if (attach == _spareAttached)
        {
            attach = !attach;
        }
        _stats.Count(attach ? "ops:hotplug attach" : "ops:hotplug detach");
        if (attach)
        {
            await _world.Toolstack.AttachAsync(_guest.Id, _devId, SparePort, _spareBusId).ConfigureAwait(false);
            _address[SparePort] = 0;
        }
        else
        {
            await _world.Toolstack.DetachAsync(_guest.Id, _devId, SparePort).ConfigureAwait(false);
        }
        _spareAttached = attach;
    }

    /// <summary>Waits until the frontend saw port 3's last hotplug event (the conn ring is then quiet). False after 3 s.</summary>
    private async Task<bool> WaitForSpareEventAsync()
    {
        var sw = Stopwatch.StartNew();
        while ((_frontend.PortSpeed(SparePort) != 0) != _spareAttached)
        {
            if (!_frontend.IsConnected || sw.Elapsed > TimeSpan.FromSeconds(3))
            {
                return !_frontend.IsConnected;
            }
            _frontend.PollResponses();
            await Task.Delay(1).ConfigureAwait(false);
        }
        return true;
    }

    private void Finding(string text) => _stats.Finding($"{_where}: {text}");

    /// <summary>The invariants checked after every step.</summary>
    private async Task CheckHealthAsync()
    {
        Drain();
        if (_world.Loop.Completion.IsCompleted)
        {
            Fatal = $"{_where}: the event loop stopped: {_world.Loop.Completion.Exception?.GetBaseException()}";
            _stats.Finding(Fatal);
            return;
        }
        if (_world.Registry.Count != 2)
        {
            Fatal = $"{_where}: the registry serves {_world.Registry.Count} controllers, not 2";
            _stats.Finding(Fatal);
            return;
        }
        if (_frontend.ProtocolError is { } pe)
        {
            if (_selfHarm)
            {
                _stats.Count($"recoveries:after the guest corrupted its own ring");
            }
            else
            {
                Finding($"hostile frontend protocol error: {pe}");
            }
            await RecoverAsync("protocol error").ConfigureAwait(false);
        }
        else if (!_frontend.IsConnected)
        {
            await RecoverAsync("frontend shut down").ConfigureAwait(false);
        }
    }
}

/// <summary>What the fuzzer's model knows of a request it put on the ring.</summary>
/// <param name="Verdict">The validator's refusal reason, or null if it accepted the request.</param>
/// <param name="Ambiguous">The slot may have been rewritten: its response is checked only for its id and status.</param>
/// <param name="SelfHarm">The guest may have corrupted its own ring with it: its response is not checked at all.</param>
/// <param name="Union">The union as sent (a SET_ADDRESS answered OK moves the model's address).</param>
internal readonly record struct InFlight(ushort Id, uint Pipe, int MaxLength, string? Verdict, bool Ambiguous, bool IsUnlink, string Origin, bool SelfHarm = false, ulong Union = 0);
