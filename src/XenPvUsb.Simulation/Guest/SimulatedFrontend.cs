using System.Globalization;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Tmds.Linux;
using XenPvUsb.Rings;
using XenPvUsb.Simulation.Xen;
using XenPvUsb.Usb;
using XenPvUsb.Usbif;
using XenPvUsb.Xen;
using XenPvUsb.XenStore;
using static XenPvUsb.Usbif.Usbif;

namespace XenPvUsb.Simulation.Guest;

/// <summary>
/// A PVUSB frontend written from usbif.h that behaves like Linux xen-hcd: 16 request slots (id =
/// slot index), at most 16 segments per URB, read-only grants for OUT data and writable ones for IN,
/// 512 pre-posted conn requests, straight from Initialising to Connected, every grant ended after
/// its response ("backend didn't release grant" is a protocol error), and a sticky error latch.
/// </summary>
public sealed partial class SimulatedFrontend : IAsyncDisposable
{
    public const int ShadowSlots = USB_URB_RING_SIZE;

    private const int PageSize = SimulatedGrantTables.PageSize;

    private readonly DomId _self;
    private readonly int _devId;
    private readonly XenStoreConnection _store;
    private readonly GuestGrantTable _grants;
    private readonly SimulatedEventChannels _evtchns;
    private readonly ILogger _logger;
    private readonly Lock _ringLock = new();
    private readonly Shadow[] _shadows = new Shadow[ShadowSlots];
    private readonly Stack<int> _freeShadows = new();
    private readonly SemaphoreSlim _shadowSemaphore = new(ShadowSlots, ShadowSlots);
    private readonly Dictionary<ushort, TaskCompletionSource<usbif_urb_response>> _rawWaiters = new();
    private readonly Channel<PortEvent> _portEvents = Channel.CreateUnbounded<PortEvent>();
    private readonly int[] _portSpeed = new int[USBIF_MAX_PORTNR + 1];

    private FrontRing<usbif_urb_request, usbif_urb_response> _urbRing;
    private FrontRing<usbif_conn_request, usbif_conn_response> _connRing;
    private nint _urbPage;
    private nint _connPage;
    private GrantRef _urbRef;
    private GrantRef _connRef;
    private GuestPort? _port;
    private Thread? _eventThread;
    private volatile bool _stopping;
    private volatile bool _shuttingDown;
    private readonly TaskCompletionSource _shutdownCompleted = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private string? _protocolError;
    private Task? _stateWatcher;
    private XenStoreWatch? _backendStateWatch;

    public SimulatedFrontend(DomId self, int devId, XenStoreConnection guestStore, GuestGrantTable grants, SimulatedEventChannels evtchns, ILogger? logger = null)
    {
        _self = self;
        _devId = devId;
        _store = guestStore;
        _grants = grants;
        _evtchns = evtchns;
        _logger = logger ?? NullLogger.Instance;
        for (int i = ShadowSlots - 1; i >= 0; i--)
        {
            _shadows[i] = new Shadow(i);
            _freeShadows.Push(i);
        }
        FrontendPath = $"/local/domain/{self.Value}/device/vusb/{devId}";
    }

    public string FrontendPath { get; }

    public string BackendPath { get; private set; } = "";

    public DomId BackendDomain { get; private set; }

    public int NumPorts { get; private set; }

    public int UsbVersion { get; private set; }

    public bool IsConnected => _port is not null && !_stopping;

    /// <summary>The sticky protocol-error latch: once set, nothing more is processed.</summary>
    public string? ProtocolError => _protocolError;

    /// <summary>Conn-ring events in arrival order.</summary>
    public ChannelReader<PortEvent> PortEvents => _portEvents.Reader;

    /// <summary>Last speed reported for a port (0 = nothing attached).</summary>
    public int PortSpeed(int port) => Volatile.Read(ref _portSpeed[port]);

    /// <summary>
    /// xenbus probe + connect, as xen-hcd does it: read num-ports and usb-ver, wait for the backend to
    /// reach InitWait/Initialised/Connected, grant both ring pages, allocate the event channel, write
    /// the three nodes in one transaction, pre-post the conn requests, go Connected.
    /// </summary>
    public async Task ConnectAsync(bool startEventThread = true, CancellationToken cancellationToken = default)
    {
        BackendPath = await _store.ReadAsync($"{FrontendPath}/backend", cancellationToken: cancellationToken).ConfigureAwait(false)
            ?? throw new InvalidOperationException($"{FrontendPath}/backend is missing");
        string backendId = await _store.ReadAsync($"{FrontendPath}/backend-id", cancellationToken: cancellationToken).ConfigureAwait(false) ?? "0";
        BackendDomain = new DomId(ushort.Parse(backendId, CultureInfo.InvariantCulture));
        NumPorts = int.Parse(await _store.ReadAsync($"{BackendPath}/num-ports", cancellationToken: cancellationToken).ConfigureAwait(false) ?? "0", CultureInfo.InvariantCulture);
        UsbVersion = int.Parse(await _store.ReadAsync($"{BackendPath}/usb-ver", cancellationToken: cancellationToken).ConfigureAwait(false) ?? "0", CultureInfo.InvariantCulture);
        if (NumPorts < 1 || NumPorts > USBIF_MAX_PORTNR || UsbVersion is < 1 or > 2)
        {
            throw new FrontendProtocolException($"invalid num-ports {NumPorts} or usb-ver {UsbVersion}");
        }

        _backendStateWatch = await _store.WatchAsync($"{BackendPath}/state", cancellationToken).ConfigureAwait(false);
        while (true)
        {
            await _backendStateWatch.Events.ReadAsync(cancellationToken).ConfigureAwait(false);
            XenbusState be = await ReadBackendStateAsync(cancellationToken).ConfigureAwait(false);
            if (be is XenbusState.InitWait or XenbusState.Initialised or XenbusState.Connected)
            {
                break;
            }
        }

        _urbPage = GuestGrantTable.AllocPage();
        _connPage = GuestGrantTable.AllocPage();
        _urbRing = new FrontRing<usbif_urb_request, usbif_urb_response>(_urbPage);
        _connRing = new FrontRing<usbif_conn_request, usbif_conn_response>(_connPage);
        _urbRef = _grants.Grant(BackendDomain, _urbPage, readOnly: false);
        _connRef = _grants.Grant(BackendDomain, _connPage, readOnly: false);
        _port = _evtchns.AllocUnbound(_self, BackendDomain);

        await _store.TransactAsync(async tx =>
        {
            await _store.WriteAsync($"{FrontendPath}/urb-ring-ref", _urbRef.ToString(), tx, cancellationToken).ConfigureAwait(false);
            await _store.WriteAsync($"{FrontendPath}/conn-ring-ref", _connRef.ToString(), tx, cancellationToken).ConfigureAwait(false);
            await _store.WriteAsync($"{FrontendPath}/event-channel", _port.Port.ToString(), tx, cancellationToken).ConfigureAwait(false);
        }, cancellationToken).ConfigureAwait(false);

        lock (_ringLock)
        {
            for (int i = 0; i < _connRing.Size; i++)
            {
                _connRing.PutRequest(new usbif_conn_request { id = (ushort)i });
            }
            _connRing.PushRequestsAndCheckNotify();
        }
        _port.Notify();
        await _store.WriteAsync($"{FrontendPath}/state", ((int)XenbusState.Connected).ToString(CultureInfo.InvariantCulture), cancellationToken: cancellationToken).ConfigureAwait(false);

        if (startEventThread)
        {
            _eventThread = new Thread(EventThread) { IsBackground = true, Name = $"vusb-front-{_self.Value}-{_devId}" };
            _eventThread.Start();
        }
        _stateWatcher = WatchBackendStateAsync();
    }

    /// <summary>Waits until a port reports a device (or, with <paramref name="connected"/> false, its removal).</summary>
    public async Task WaitForPortAsync(int port, bool connected, TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        while ((PortSpeed(port) != 0) != connected)
        {
            try
            {
                await _portEvents.Reader.WaitToReadAsync(cts.Token).ConfigureAwait(false);
                while (_portEvents.Reader.TryRead(out _))
                {
                }
                if ((PortSpeed(port) != 0) != connected)
                {
                    await Task.Delay(1, cts.Token).ConfigureAwait(false);
                }
            }
            catch (OperationCanceledException)
            {
                throw new TimeoutException($"port {port} did not become {(connected ? "connected" : "empty")} within {timeout}");
            }
        }
    }

    private async Task<XenbusState> ReadBackendStateAsync(CancellationToken cancellationToken)
    {
        string? s = await _store.ReadAsync($"{BackendPath}/state", cancellationToken: cancellationToken).ConfigureAwait(false);
        return int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out int v) ? (XenbusState)v : XenbusState.Unknown;
    }

    /// <summary>xen-hcd's otherend_changed: backend Closing (or Closed) → remove the HCD and go Closed.</summary>
    private async Task WatchBackendStateAsync()
    {
        try
        {
            while (await _backendStateWatch!.Events.WaitToReadAsync().ConfigureAwait(false))
            {
                while (_backendStateWatch.Events.TryRead(out _))
                {
                }
                XenbusState be = await ReadBackendStateAsync(CancellationToken.None).ConfigureAwait(false);
                if (be is XenbusState.Closing or XenbusState.Closed)
                {
                    await ShutdownAsync().ConfigureAwait(false);
                    return;
                }
            }
        }
        catch (Exception e) when (e is XenStoreConnectionClosedException or ObjectDisposedException or OperationCanceledException)
        {
        }
    }

    /// <summary>How long <see cref="ShutdownAsync"/> waits for the backend to answer the URBs in flight.</summary>
    public static TimeSpan RemovalTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// True if a shutdown found URBs the backend never answered: the real xen-hcd would hang there for
    /// ever (usb_remove_hcd waits for every URB; hung-task reports in the guest).
    /// </summary>
    public bool HungOnRemoval { get; private set; }

    /// <summary>Completes when a shutdown (the backend's Closing, or <see cref="ShutdownAsync"/>) has finished and Closed is written.</summary>
    public Task ShutdownCompleted => _shutdownCompleted.Task;

    /// <summary>
    /// Tears the connection down like usb_remove_hcd: every URB in flight is unlinked and waited for
    /// (xen-hcd gives a URB back only on the backend's response), then the rest fail with -ESHUTDOWN
    /// and the state goes Closed.
    /// </summary>
    public async Task ShutdownAsync()
    {
        if (_stopping || _shuttingDown)
        {
            return;
        }
        _shuttingDown = true;
        if (_protocolError is null && _port is not null && _eventThread is not null)
        {
            List<(Shadow Shadow, TaskCompletionSource<UrbResult> Tcs)> inFlight = new();
            lock (_ringLock)
            {
                foreach (Shadow s in _shadows)
                {
                    if (s.InFlight && s.Tcs is { } tcs && !s.Pipe.IsUnlink)
                    {
                        inFlight.Add((s, tcs));
                    }
                }
            }
            foreach ((Shadow shadow, TaskCompletionSource<UrbResult> tcs) in inFlight)
            {
                TryUnlink(shadow, tcs);
            }
            long deadline = Environment.TickCount64 + (long)RemovalTimeout.TotalMilliseconds;
            while (_protocolError is null && AnyInFlight() && Environment.TickCount64 < deadline)
            {
                await Task.Delay(2).ConfigureAwait(false);
            }
            if (AnyInFlight() && _protocolError is null)
            {
                HungOnRemoval = true;
                _logger.FrontendHungOnRemoval(_self.Value, _devId);
            }
        }
        _stopping = true;
        _port?.Raise();
        if (_eventThread is not null && Environment.CurrentManagedThreadId != _eventThread.ManagedThreadId)
        {
            _eventThread.Join();
        }
        lock (_ringLock)
        {
            foreach (Shadow s in _shadows)
            {
                s.Tcs?.TrySetResult(new UrbResult(USBIF_STATUS_SHUTDOWN, 0));
                s.Tcs = null;
            }
            foreach (TaskCompletionSource<usbif_urb_response> w in _rawWaiters.Values)
            {
                w.TrySetException(new FrontendProtocolException("frontend shut down"));
            }
            _rawWaiters.Clear();
        }
        _portEvents.Writer.TryComplete();
        try
        {
            await _store.WriteAsync($"{FrontendPath}/state", ((int)XenbusState.Closed).ToString(CultureInfo.InvariantCulture)).ConfigureAwait(false);
        }
        catch (Exception e) when (e is XenStoreException or XenStoreConnectionClosedException)
        {
        }
        _shutdownCompleted.TrySetResult();
    }

    public async ValueTask DisposeAsync()
    {
        await ShutdownAsync().ConfigureAwait(false);
        if (_backendStateWatch is not null)
        {
            try
            {
                await _backendStateWatch.DisposeAsync().ConfigureAwait(false);
            }
            catch (Exception e) when (e is XenStoreException or XenStoreConnectionClosedException)
            {
            }
        }
        _port?.Dispose();
        // The backend may still hold the ring pages for a moment; a page is only freed once its grant ended.
        for (int i = 0; i < 200 && !(_grants.TryEndAccess(_urbRef) & _grants.TryEndAccess(_connRef)); i++)
        {
            await Task.Delay(5).ConfigureAwait(false);
        }
    }

    private unsafe void EventThread()
    {
        var pfd = new pollfd { fd = _port!.Fd, events = LibC.POLLIN };
        while (!_stopping)
        {
            int n = LibC.poll(&pfd, 1, -1);
            if (n < 0)
            {
                continue;
            }
            _port.ConsumePending();
            if (_stopping)
            {
                return;
            }
            ProcessResponses();
        }
    }

    private bool AnyInFlight()
    {
        lock (_ringLock)
        {
            foreach (Shadow s in _shadows)
            {
                if (s.InFlight)
                {
                    return true;
                }
            }
            return false;
        }
    }

    private void SetProtocolError(string error)
    {
        if (_protocolError is null)
        {
            _protocolError = error;
            _logger.FrontendProtocolError(_self.Value, _devId, error);
        }
    }

    private sealed class Shadow
    {
        public Shadow(int index)
        {
            Index = index;
        }

        public int Index { get; }

        public nint[] Pages { get; } = new nint[USBIF_MAX_SEGMENTS_PER_REQUEST];

        public GrantRef[] Grants { get; } = new GrantRef[USBIF_MAX_SEGMENTS_PER_REQUEST];

        public int GrantCount { get; set; }

        public TaskCompletionSource<UrbResult>? Tcs { get; set; }

        public Memory<byte> UserBuffer { get; set; }

        public int PageOffset { get; set; }

        public bool IsIn { get; set; }

        public bool InFlight { get; set; }

        public UrbResult Result { get; set; }

        public bool Done { get; set; }

        public UsbifPipe Pipe { get; set; }

        /// <summary>The isochronous side of the URB in flight, or null.</summary>
        public IsoRequest? Iso { get; set; }
    }
}
