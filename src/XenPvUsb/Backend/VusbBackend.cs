using System.Globalization;
using Microsoft.Extensions.Logging;
using Nito.AsyncEx;
using XenPvUsb.Host;
using XenPvUsb.Logging;
using XenPvUsb.Usb;
using XenPvUsb.Xen;
using XenPvUsb.XenStore;

namespace XenPvUsb.Backend;

/// <summary>
/// One virtual host controller, backend/vusb/&lt;domid&gt;/&lt;devid&gt;, through its xenbus life
/// (cf. QEMU xen_usb_ops): Initialise (read the toolstack's nodes, InitWait), Connect (frontend wrote
/// its rings: map, bind, Connected), port changes, Disconnect (frontend Closing/Closed, toolstack
/// teardown, domain death), Free. Lifecycle steps are serialised by one async lock and run on the
/// thread pool; anything touching the controller's data path is posted to the event loop.
/// </summary>
internal sealed class VusbBackend : IAsyncDisposable
{
    private readonly BackendHost _host;
    private readonly BackendRegistry _registry;
    private readonly ILogger _logger;
    private readonly AsyncLock _lock = new();
    private readonly CancellationTokenSource _cts = new();
    private VusbController? _controller;
    private string?[] _assigned = [];
    // What sysfs said of each port's device when it was attached: the audit trail names it after it is gone.
    private UsbDeviceInfo?[] _deviceInfo = [];
    private string? _domainName;
    private bool _adopting;
    private XenStoreWatch? _frontendWatch;
    private Task? _frontendWatchLoop;
    private XenbusState _state = XenbusState.Unknown;
    private bool _disposed;
    // The toolstack asked for removal: Closing is written and the controller serves in closing mode
    // until the frontend reaches Closed (or RemovalGrace passes), then everything is released.
    private bool _removing;
    // The domain died: nothing is attached or served again; the registry drops this backend.
    private bool _dead;

    /// <summary>How long a removal waits for the frontend to close before releasing anyway (libxl waits 10 s for Closed).</summary>
    internal static TimeSpan RemovalGrace { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>How long a released device may take to be handed back before the release is logged as slow.</summary>
    private static readonly TimeSpan s_releaseWarning = TimeSpan.FromSeconds(2);

    public VusbBackend(BackendHost host, BackendRegistry registry, DomId frontend, int devId)
    {
        _host = host;
        _registry = registry;
        _logger = host.LoggerFactory.CreateLogger("XenPvUsb.Backend");
        Frontend = frontend;
        DevId = devId;
        BackendPath = $"/local/domain/{host.Self.Value}/backend/vusb/{frontend.Value}/{devId}";
    }

    public DomId Frontend { get; }

    public int DevId { get; }

    public string BackendPath { get; }

    public string? FrontendPath { get; private set; }

    public XenbusState State => _state;

    internal VusbController? Controller => _controller;

    /// <summary>Logs the controller's counters if it is connected (<see cref="VusbController.LogCounters"/>).</summary>
    internal Task<bool> LogCountersAsync() => _host.Loop.InvokeAsync(() =>
    {
        if (_controller is not { IsConnected: true } c)
        {
            return false;
        }
        c.LogCounters();
        return true;
    });

    /// <summary>Bus id assigned to a port in xenstore (even while the device is unplugged), or null.</summary>
    public string? AssignedBusId(int port) => port >= 1 && port < _assigned.Length ? _assigned[port] : null;

    /// <summary>Reads the toolstack's nodes, creates the controller and goes InitWait. Returns false if the nodes are unusable.</summary>
    public async Task<bool> InitialiseAsync()
    {
        using (await _lock.LockAsync(_cts.Token).ConfigureAwait(false))
        {
            XenStoreConnection xs = _host.Store;
            string? frontendPath = await xs.ReadAsync($"{BackendPath}/frontend").ConfigureAwait(false);
            string? numPortsText = await xs.ReadAsync($"{BackendPath}/num-ports").ConfigureAwait(false);
            string? usbVerText = await xs.ReadAsync($"{BackendPath}/usb-ver").ConfigureAwait(false);
            string? online = await xs.ReadAsync($"{BackendPath}/online").ConfigureAwait(false);
            string? grantModeText = await xs.ReadAsync($"{BackendPath}/grant-mode").ConfigureAwait(false);
            bool mergeBulkIn = await xs.ReadAsync($"{BackendPath}/merge-bulk-in").ConfigureAwait(false) != "0";
            if (frontendPath is null || numPortsText is null || usbVerText is null)
            {
                return false; // the toolstack is still writing; a later event retries
            }
            if (!int.TryParse(numPortsText, NumberStyles.None, CultureInfo.InvariantCulture, out int numPorts) || numPorts < 1 || numPorts > Usbif.Usbif.USBIF_MAX_PORTNR
                || !int.TryParse(usbVerText, NumberStyles.None, CultureInfo.InvariantCulture, out int usbVer) || usbVer is < 1 or > 2
                || frontendPath != $"/local/domain/{Frontend.Value}/device/vusb/{DevId}")
            {
                _logger.BackendConfigInvalid(Frontend.Value, DevId, numPortsText, usbVerText, frontendPath);
                await WriteStateAsync(XenbusState.Closed).ConfigureAwait(false);
                return true;
            }
            if (online == "0")
            {
                return false;
            }
            FrontendPath = frontendPath;
            _assigned = new string?[numPorts + 1];
            _deviceInfo = new UsbDeviceInfo?[numPorts + 1];
            _domainName = await ReadDomainNameAsync().ConfigureAwait(false);
            GrantMode grantMode = _host.GrantMode;
            if (grantModeText is not null && !GrantModes.TryParse(grantModeText, out grantMode))
            {
                grantMode = _host.GrantMode;
                _logger.GrantModeInvalid(Frontend.Value, DevId, grantModeText, grantMode);
            }
            _controller = await _host.Loop.InvokeAsync(() =>
            {
                var c = new VusbController(Frontend, DevId, numPorts, usbVer, _host.Grants, _host.Loop, _logger, grantMode, mergeBulkIn)
                {
                    UsbfsBudget = _host.UsbfsBudget,
                };
                c.RingErrorLatched = OnRingError;
                c.Failed = OnControllerFailed;
                return c;
            }).ConfigureAwait(false);
            string? backendState = await xs.ReadAsync($"{BackendPath}/state").ConfigureAwait(false);
            string? frontendState = await xs.ReadAsync($"{FrontendPath}/state").ConfigureAwait(false);
            if (backendState == "4" && frontendState == "4" && await TryAdoptLockedAsync().ConfigureAwait(false))
            {
                _frontendWatch = await xs.WatchAsync($"{FrontendPath}/state").ConfigureAwait(false);
                _frontendWatchLoop = FrontendWatchLoopAsync(_frontendWatch);
                return true;
            }
            await WriteStateAsync(XenbusState.InitWait).ConfigureAwait(false);
            _logger.BackendInitialised(Frontend.Value, DevId, numPorts, usbVer, grantMode);
            await SyncPortsLockedAsync().ConfigureAwait(false);
            _frontendWatch = await xs.WatchAsync($"{FrontendPath}/state").ConfigureAwait(false);
            _frontendWatchLoop = FrontendWatchLoopAsync(_frontendWatch);
            return true;
        }
    }

    /// <summary>Something under our backend directory changed (port/N, state, online).</summary>
    public async Task OnBackendChangedAsync()
    {
        using (await _lock.LockAsync(_cts.Token).ConfigureAwait(false))
        {
            if (_controller is null || _disposed || _dead)
            {
                return;
            }
            XenStoreConnection xs = _host.Store;
            string? online = await xs.ReadAsync($"{BackendPath}/online").ConfigureAwait(false);
            string? state = await xs.ReadAsync($"{BackendPath}/state").ConfigureAwait(false);
            // libxl's removal: online=0 and state=Closing, then it waits for Closed.
            if (online == "0" || (state == "5" && _state != XenbusState.Closing))
            {
                if (_state != XenbusState.Closed)
                {
                    await BeginRemovalLockedAsync().ConfigureAwait(false);
                }
                return;
            }
            if (!_removing)
            {
                await SyncPortsLockedAsync().ConfigureAwait(false);
            }
        }
    }

    /// <summary>
    /// The frontend's domain died (@releaseDomain): release everything at once (nobody is left to
    /// answer), hand the devices back to dom0, and remove the controller's nodes unless libxl made it
    /// (libxl removes its own). Final: the backend never attaches or serves again.
    /// </summary>
    public async Task OnDomainGoneAsync()
    {
        using (await _lock.LockAsync(_cts.Token).ConfigureAwait(false))
        {
            if (_dead)
            {
                return;
            }
            _dead = true;
            _logger.DomainGone(Frontend.Value, DevId);
            await DisconnectLockedAsync(releaseDevices: true).ConfigureAwait(false);
            await RemoveNodesAsync(_host, _logger, Frontend, DevId, includeLibxl: false).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Removes the nodes of a controller whose domain is gone, as libxl removes its own devices'
    /// (the backend directory, the frontend directory, and the per-domain directory once empty).
    /// Controllers with a libxl record (/libxl/&lt;domid&gt;/device/vusb/&lt;devid&gt;) are libxl's to remove,
    /// unless <paramref name="includeLibxl"/> (a leftover of a domain long gone, found at start-up).
    /// </summary>
    internal static async Task RemoveNodesAsync(BackendHost host, ILogger logger, DomId frontend, int devId, bool includeLibxl)
    {
        XenStoreConnection xs = host.Store;
        string root = $"/local/domain/{host.Self.Value}/backend/vusb/{frontend.Value}";
        try
        {
            if (!includeLibxl && await xs.ReadAsync($"/libxl/{frontend.Value}/device/vusb/{devId}").ConfigureAwait(false) is not null)
            {
                return;
            }
            if (host.StateDirectory is { } dir && File.Exists(ControllerJournal.PathFor(dir, frontend.Value, devId)))
            {
                File.Delete(ControllerJournal.PathFor(dir, frontend.Value, devId));
            }
            await xs.TransactAsync(async tx =>
            {
                await xs.RemoveAsync($"{root}/{devId}", tx).ConfigureAwait(false);
                if (await xs.ReadAsync($"/local/domain/{frontend.Value}/device/vusb/{devId}", tx).ConfigureAwait(false) is not null)
                {
                    await xs.RemoveAsync($"/local/domain/{frontend.Value}/device/vusb/{devId}", tx).ConfigureAwait(false);
                }
                if ((await xs.DirectoryAsync(root, tx).ConfigureAwait(false)).Count == 0 && await xs.ReadAsync(root, tx).ConfigureAwait(false) is not null)
                {
                    await xs.RemoveAsync(root, tx).ConfigureAwait(false);
                }
            }).ConfigureAwait(false);
            logger.ControllerNodesRemoved(frontend.Value, devId);
        }
        catch (Exception e) when (e is XenStoreException or IOException or UnauthorizedAccessException)
        {
            logger.BackendFailed(frontend.Value, devId, e);
        }
    }

    /// <summary>A host device appeared or left (physical hotplug).</summary>
    public async Task OnHotplugAsync(UsbHotplugEvent e)
    {
        using (await _lock.LockAsync(_cts.Token).ConfigureAwait(false))
        {
            if (_controller is null || _disposed || _dead || _removing)
            {
                return;
            }
            for (int port = 1; port < _assigned.Length; port++)
            {
                if (_assigned[port] != e.BusId)
                {
                    continue;
                }
                if (e.Added)
                {
                    await AttachLockedAsync(port, e.BusId, plugged: true).ConfigureAwait(false);
                }
                else
                {
                    await DetachLockedAsync(port, keepAssignment: true).ConfigureAwait(false);
                    await PublishPortStatusAsync(port, new PortStatus(PortStatus.Waiting, e.BusId, null).ToString()).ConfigureAwait(false);
                }
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        using (await _lock.LockAsync().ConfigureAwait(false))
        {
            if (_disposed)
            {
                return;
            }
            _disposed = true;
            await DisconnectLockedAsync(releaseDevices: true).ConfigureAwait(false);
            if (_controller is { } c)
            {
                await _host.Loop.InvokeAsync(c.Dispose).ConfigureAwait(false);
            }
        }
        await _cts.CancelAsync().ConfigureAwait(false);
        await StopWatchingAsync().ConfigureAwait(false);
        // _cts is cancelled, not disposed: late callers (hotplug, @releaseDomain) may still ask for its token.
    }

    private async Task StopWatchingAsync()
    {
        if (_frontendWatch is not null)
        {
            try
            {
                await _frontendWatch.DisposeAsync().ConfigureAwait(false);
            }
            catch (Exception e) when (e is XenStoreException or XenStoreConnectionClosedException)
            {
            }
        }
        if (_frontendWatchLoop is not null)
        {
            await _frontendWatchLoop.ConfigureAwait(false);
        }
    }

    private async Task FrontendWatchLoopAsync(XenStoreWatch watch)
    {
        try
        {
            while (await watch.Events.WaitToReadAsync(_cts.Token).ConfigureAwait(false))
            {
                while (watch.Events.TryRead(out _))
                {
                }
                await OnFrontendChangedAsync().ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException)
        {
        }
        catch (Exception e) when (e is XenStoreException or XenStoreConnectionClosedException)
        {
            _logger.BackendWatchFailed(Frontend.Value, DevId, e);
        }
        catch (Exception e) when (e is not ObjectDisposedException)
        {
            // Contained: this controller stops following its frontend; the daemon goes on.
            _logger.BackendFailed(Frontend.Value, DevId, e);
        }
    }

    private async Task OnFrontendChangedAsync()
    {
        using (await _lock.LockAsync(_cts.Token).ConfigureAwait(false))
        {
            if (_controller is null || _disposed)
            {
                return;
            }
            string? text = await _host.Store.ReadAsync($"{FrontendPath}/state").ConfigureAwait(false);
            XenbusState fe = int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int v) && v <= 8 ? (XenbusState)v : XenbusState.Unknown;
            switch (fe)
            {
                case XenbusState.Closed or XenbusState.Unknown when _removing:
                    await FinishRemovalLockedAsync().ConfigureAwait(false);
                    break;
                case XenbusState.Initialising when _state == XenbusState.Closed && !_removing && !_dead:
                    // The frontend reinitialises after a close: serve it afresh.
                    await WriteStateAsync(XenbusState.InitWait).ConfigureAwait(false);
                    break;
                case XenbusState.Initialised or XenbusState.Connected when _state == XenbusState.InitWait:
                    await ConnectLockedAsync().ConfigureAwait(false);
                    break;
                case XenbusState.Closing when _state is not XenbusState.Closed and not XenbusState.Closing:
                    // The frontend is going away: keep answering (its teardown unlinks and waits) until it is Closed.
                    await _host.Loop.InvokeAsync(_controller.BeginClose).ConfigureAwait(false);
                    await WriteStateAsync(XenbusState.Closing).ConfigureAwait(false);
                    break;
                case XenbusState.Closed or XenbusState.Unknown when _state is not XenbusState.Closed and not XenbusState.InitWait:
                    // The frontend may have seen the toolstack's own state=5 and closed before our removal ran.
                    if (await _host.Store.ReadAsync($"{BackendPath}/online").ConfigureAwait(false) == "0")
                    {
                        _removing = true;
                        await FinishRemovalLockedAsync().ConfigureAwait(false);
                        break;
                    }
                    await DisconnectLockedAsync(releaseDevices: false).ConfigureAwait(false);
                    await WriteStateAsync(XenbusState.Closed).ConfigureAwait(false);
                    break;
            }
        }
    }

    /// <summary>
    /// The toolstack removes the controller. A connected frontend first gets Closing with the controller in
    /// closing mode, so that xen-hcd's usb_remove_hcd, which unlinks every URB and waits for each answer,
    /// can finish; on its Closed (or after <see cref="RemovalGrace"/>) everything is released and Closed written.
    /// </summary>
    private async Task BeginRemovalLockedAsync()
    {
        if (_removing)
        {
            return;
        }
        _removing = true;
        VusbController c = _controller!;
        string? text = FrontendPath is null ? null : await _host.Store.ReadAsync($"{FrontendPath}/state").ConfigureAwait(false);
        bool frontendUp = text is "3" or "4" or "5";
        if (!frontendUp || !await _host.Loop.InvokeAsync(() => c.IsConnected).ConfigureAwait(false))
        {
            await FinishRemovalLockedAsync().ConfigureAwait(false);
            return;
        }
        await _host.Loop.InvokeAsync(c.BeginClose).ConfigureAwait(false);
        await WriteStateAsync(XenbusState.Closing).ConfigureAwait(false);
        _ = RemovalDeadlineAsync();
    }

    private async Task RemovalDeadlineAsync()
    {
        try
        {
            await Task.Delay(RemovalGrace, _cts.Token).ConfigureAwait(false);
            using (await _lock.LockAsync(_cts.Token).ConfigureAwait(false))
            {
                if (_removing && _state != XenbusState.Closed && !_disposed)
                {
                    _logger.RemovalForced(Frontend.Value, DevId, RemovalGrace.TotalSeconds);
                    // A device that never gave its URBs back: answer them anyway, the frontend waits for each.
                    VusbController c = _controller!;
                    await _host.Loop.InvokeAsync(() =>
                    {
                        if (c.IsConnected)
                        {
                            c.AnswerAllInFlight();
                        }
                    }).ConfigureAwait(false);
                    await FinishRemovalLockedAsync().ConfigureAwait(false);
                }
            }
        }
        catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or XenStoreException or XenStoreConnectionClosedException)
        {
        }
    }

    private async Task FinishRemovalLockedAsync()
    {
        await DisconnectLockedAsync(releaseDevices: true).ConfigureAwait(false);
        if (_state != XenbusState.Closed)
        {
            await WriteStateAsync(XenbusState.Closed).ConfigureAwait(false);
        }
    }

    private async Task ConnectLockedAsync()
    {
        XenStoreConnection xs = _host.Store;
        string? urb = await xs.ReadAsync($"{FrontendPath}/urb-ring-ref").ConfigureAwait(false);
        string? conn = await xs.ReadAsync($"{FrontendPath}/conn-ring-ref").ConfigureAwait(false);
        string? evtchn = await xs.ReadAsync($"{FrontendPath}/event-channel").ConfigureAwait(false);
        if (!uint.TryParse(urb, NumberStyles.None, CultureInfo.InvariantCulture, out uint urbRef)
            || !uint.TryParse(conn, NumberStyles.None, CultureInfo.InvariantCulture, out uint connRef)
            || !uint.TryParse(evtchn, NumberStyles.None, CultureInfo.InvariantCulture, out uint port))
        {
            _logger.FrontendNodesInvalid(Frontend.Value, DevId, urb, conn, evtchn);
            await WriteStateAsync(XenbusState.Closing).ConfigureAwait(false);
            return;
        }
        VusbController c = _controller!;
        ControllerJournal? journal = CreateJournal(urbRef, connRef, port);
        try
        {
            IEventChannel channel = _host.EventChannels.BindInterdomain(Frontend, new EvtchnPort(port));
            try
            {
                await _host.Loop.InvokeAsync(() => c.Connect(new GrantRef(urbRef), new GrantRef(connRef), channel, journal)).ConfigureAwait(false);
            }
            catch
            {
                channel.Dispose();
                throw;
            }
        }
        catch (Exception e) when (e is GrantException or EventChannelException)
        {
            journal?.Delete();
            _logger.ConnectFailed(Frontend.Value, DevId, e.Message);
            await WriteStateAsync(XenbusState.Closing).ConfigureAwait(false);
            return;
        }
        await WriteStateAsync(XenbusState.Connected).ConfigureAwait(false);
    }

    private ControllerJournal? CreateJournal(uint urbRef, uint connRef, uint port)
    {
        if (_host.StateDirectory is not { } dir)
        {
            return null;
        }
        try
        {
            return ControllerJournal.Create(dir, Frontend.Value, DevId, urbRef, connRef, port);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            _logger.JournalUnavailable(Frontend.Value, DevId, dir, e.Message);
            return null;
        }
    }

    /// <summary>
    /// Backend and frontend are both Connected: a predecessor daemon served this controller. Take it over
    /// from its journal if the journal belongs to the connection the frontend advertises; the guest
    /// notices at most errors on the requests that were in flight. Returns false if it cannot be
    /// re-adopted (no or another connection's journal, or the snapshot does not fit the rings).
    /// </summary>
    private async Task<bool> TryAdoptLockedAsync()
    {
        XenStoreConnection xs = _host.Store;
        string? urb = await xs.ReadAsync($"{FrontendPath}/urb-ring-ref").ConfigureAwait(false);
        string? conn = await xs.ReadAsync($"{FrontendPath}/conn-ring-ref").ConfigureAwait(false);
        string? evtchn = await xs.ReadAsync($"{FrontendPath}/event-channel").ConfigureAwait(false);
        if (_host.StateDirectory is not { } dir
            || !uint.TryParse(urb, NumberStyles.None, CultureInfo.InvariantCulture, out uint urbRef)
            || !uint.TryParse(conn, NumberStyles.None, CultureInfo.InvariantCulture, out uint connRef)
            || !uint.TryParse(evtchn, NumberStyles.None, CultureInfo.InvariantCulture, out uint port))
        {
            _logger.AdoptionImpossible(Frontend.Value, DevId, "no recovery journal or frontend ring nodes");
            return false;
        }
        ControllerJournal? journal;
        ControllerSnapshot snapshot;
        try
        {
            journal = ControllerJournal.TryOpen(dir, Frontend.Value, DevId, urbRef, connRef, port, out snapshot);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            _logger.AdoptionImpossible(Frontend.Value, DevId, e.Message);
            return false;
        }
        if (journal is null)
        {
            _logger.AdoptionImpossible(Frontend.Value, DevId, "no recovery journal for this connection");
            return false;
        }
        VusbController c = _controller!;
        try
        {
            IEventChannel channel = _host.EventChannels.BindInterdomain(Frontend, new EvtchnPort(port));
            try
            {
                await _host.Loop.InvokeAsync(() => c.Adopt(new GrantRef(urbRef), new GrantRef(connRef), channel, journal, in snapshot)).ConfigureAwait(false);
            }
            catch
            {
                channel.Dispose();
                throw;
            }
        }
        catch (Exception e) when (e is GrantException or EventChannelException or InvalidDataException)
        {
            journal.Dispose();
            _logger.AdoptionImpossible(Frontend.Value, DevId, e.Message);
            return false;
        }
        _state = XenbusState.Connected;
        // The ports' devices were the guest's before the restart too: taken over, not attached anew (no audit record).
        _adopting = true;
        try
        {
            await SyncPortsLockedAsync().ConfigureAwait(false);
        }
        finally
        {
            _adopting = false;
        }
        await _host.Loop.InvokeAsync(c.ResumeAdopted).ConfigureAwait(false);
        return true;
    }

    /// <summary>
    /// The daemon stops and a successor will take over (systemctl restart, upgrade): nothing is said to
    /// the guest and nothing is given back to dom0. Requests in flight get <paramref name="grace"/> to
    /// finish, the rest are answered IOERROR; the rings are let go with the journal kept; devices are
    /// closed with their ports still claimed.
    /// </summary>
    public async Task SuspendAsync(TimeSpan grace)
    {
        using (await _lock.LockAsync().ConfigureAwait(false))
        {
            if (_disposed)
            {
                return;
            }
            _disposed = true;
            if (_controller is not { } c)
            {
                return;
            }
            bool connected = await _host.Loop.InvokeAsync(() =>
            {
                c.Suspend();
                return c.IsConnected;
            }).ConfigureAwait(false);
            if (connected)
            {
                long deadline = Environment.TickCount64 + (long)grace.TotalMilliseconds;
                while (await _host.Loop.InvokeAsync(() => c.InFlight).ConfigureAwait(false) > 0 && Environment.TickCount64 < deadline)
                {
                    await Task.Delay(5).ConfigureAwait(false);
                }
                await _host.Loop.InvokeAsync(() => c.AnswerAllInFlight(Usbif.Usbif.USBIF_STATUS_IOERROR)).ConfigureAwait(false);
            }
            await _host.Loop.InvokeAsync(() =>
            {
                c.Release();
                for (int port = 1; port <= c.NumPorts; port++)
                {
                    c.TakeDevice(port)?.Close();
                }
            }).ConfigureAwait(false);
        }
        await _cts.CancelAsync().ConfigureAwait(false);
        await StopWatchingAsync().ConfigureAwait(false);
    }

    /// <summary>Tests: what the kernel does to a daemon's connections when its process dies (no answers, journal as it stands).</summary>
    internal async Task CrashAsync()
    {
        using (await _lock.LockAsync().ConfigureAwait(false))
        {
            _disposed = true;
            if (_controller is { } c)
            {
                await _host.Loop.InvokeAsync(() =>
                {
                    c.Suspend();
                    c.Release(crash: true);
                    for (int port = 1; port <= c.NumPorts; port++)
                    {
                        c.TakeDevice(port)?.Close();
                    }
                }).ConfigureAwait(false);
            }
        }
        await _cts.CancelAsync().ConfigureAwait(false);
        await StopWatchingAsync().ConfigureAwait(false);
    }

    private async Task DisconnectLockedAsync(bool releaseDevices)
    {
        if (_controller is not { } c)
        {
            return;
        }
        await _host.Loop.InvokeAsync(c.Disconnect).ConfigureAwait(false);
        if (releaseDevices)
        {
            for (int port = 1; port < _assigned.Length; port++)
            {
                await DetachLockedAsync(port, keepAssignment: false).ConfigureAwait(false);
            }
        }
    }

    /// <summary>Brings the ports in line with backend/.../port/N.</summary>
    private async Task SyncPortsLockedAsync()
    {
        for (int port = 1; port < _assigned.Length; port++)
        {
            string? value = await _host.Store.ReadAsync($"{BackendPath}/port/{port}").ConfigureAwait(false);
            string? busId = string.IsNullOrEmpty(value) ? null : value;
            if (busId == _assigned[port])
            {
                continue;
            }
            await DetachLockedAsync(port, keepAssignment: false).ConfigureAwait(false);
            if (busId is null)
            {
                await PublishPortStatusAsync(port, null).ConfigureAwait(false);
                continue;
            }
            if (!UsbSysfs.IsValidBusId(busId))
            {
                await RefuseLockedAsync(port, busId, "not a USB bus id").ConfigureAwait(false);
                continue;
            }
            if (!_registry.TryClaimBusId(busId, this, port))
            {
                await RefuseLockedAsync(port, busId, "already assigned to another controller or port").ConfigureAwait(false);
                continue;
            }
            _assigned[port] = busId;
            if (_host.Usb.Find(busId) is not null)
            {
                await AttachLockedAsync(port, busId).ConfigureAwait(false);
            }
            else
            {
                _logger.DeviceAbsent(Frontend.Value, DevId, port, busId);
                await PublishPortStatusAsync(port, new PortStatus(PortStatus.Waiting, busId, null).ToString()).ConfigureAwait(false);
            }
        }
    }

    private async Task AttachLockedAsync(int port, string busId, bool plugged = false)
    {
        if (_dead || _removing)
        {
            return;
        }
        VusbController c = _controller!;
        if (await _host.Loop.InvokeAsync(() => c.DeviceAt(port) is not null).ConfigureAwait(false))
        {
            return;
        }
        IUsbHostDevice device;
        try
        {
            device = _host.Usb.Open(busId);
        }
        catch (UsbDeviceException e)
        {
            if (_host.Usb.Find(busId) is null)
            {
                // Gone between the look and the open: the assignment waits for it like any unplugged device.
                _logger.DeviceAbsent(Frontend.Value, DevId, port, busId);
                await PublishPortStatusAsync(port, new PortStatus(PortStatus.Waiting, busId, null).ToString()).ConfigureAwait(false);
                return;
            }
            _logger.DeviceOpenFailed(Frontend.Value, DevId, port, busId, e.Message);
            await RefuseLockedAsync(port, busId, e.IsBusy ? "the device is busy (another program holds it)" : $"cannot claim the device: {e.Message}").ConfigureAwait(false);
            return;
        }
        byte wire = VusbSpeed.ToWire(device.Speed, c.UsbVersion);
        if (wire == Usbif.Usbif.USBIF_SPEED_NONE)
        {
            device.Dispose();
            await RefuseLockedAsync(port, busId, $"a {device.Speed}-speed device cannot be served on a USB {c.UsbVersion}.x controller").ConfigureAwait(false);
            return;
        }
        await _host.Loop.InvokeAsync(() => c.AttachDevice(port, device, wire)).ConfigureAwait(false);
        _logger.DeviceAttached(Frontend.Value, DevId, port, busId, device.Speed);
        _deviceInfo[port] = _host.Usb.Find(busId);
        if (!_adopting)
        {
            Audit(plugged ? AuditAction.Plug : AuditAction.Attach, port, busId, plugged ? "plugged in, attached" : "attached");
        }
        await PublishPortStatusAsync(port, new PortStatus(PortStatus.Attached, busId, null).ToString()).ConfigureAwait(false);
    }

    /// <summary>
    /// A refused assignment: logged, its verdict published for whoever asked, and the port emptied
    /// (port/N cleared if it still names the device), so that it neither blocks the port nor shows in usb-list.
    /// </summary>
    private async Task RefuseLockedAsync(int port, string busId, string reason)
    {
        _logger.PortAssignmentRefused(Frontend.Value, DevId, port, busId, reason);
        Audit(AuditAction.Refuse, port, busId, $"refused: {reason}", reason, UsbSysfs.IsValidBusId(busId) ? _host.Usb.Find(busId) : null);
        if (_assigned[port] == busId)
        {
            _registry.ReleaseBusId(busId, this);
            _assigned[port] = null;
        }
        XenStoreConnection xs = _host.Store;
        await xs.TransactAsync(async tx =>
        {
            if (await xs.ReadAsync(BackendPath, tx).ConfigureAwait(false) is null)
            {
                return false;
            }
            if (await xs.ReadAsync($"{BackendPath}/port/{port}", tx).ConfigureAwait(false) == busId)
            {
                await xs.WriteAsync($"{BackendPath}/port/{port}", "", tx).ConfigureAwait(false);
            }
            await xs.WriteAsync($"{BackendPath}/{PortStatus.Directory}/{port}", new PortStatus(PortStatus.Refused, busId, reason).ToString(), tx).ConfigureAwait(false);
            return true;
        }).ConfigureAwait(false);
    }

    /// <summary>One audit record about a port's device; <paramref name="info"/> if known, else what sysfs said at its attach.</summary>
    private void Audit(AuditAction action, int port, string busId, string what, string? reason = null, UsbDeviceInfo? info = null)
    {
        info ??= port < _deviceInfo.Length ? _deviceInfo[port] : null;
        info ??= UsbSysfs.IsValidBusId(busId) ? _host.Usb.Find(busId) : null;
        string? rule = null;
        if (info is not null && _host.RuleFor is { } ruleFor)
        {
            try
            {
                rule = ruleFor(_domainName, info);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
            }
        }
        string domain = _domainName is null ? $"domain {Frontend.Value}" : $"{_domainName} (domain {Frontend.Value})";
        string message = $"vusb {Frontend.Value}/{DevId} port {port}: {AuditRecord.DeviceText(busId, info)} {what}; guest {domain}{(rule is null ? "" : $"; rule: {rule}")}";
        _host.Audit.Record(new AuditRecord(action, message)
        {
            DomId = Frontend,
            Domain = _domainName,
            DevId = DevId,
            Port = port,
            Rule = rule,
            Reason = reason,
        }.WithDevice(busId, info));
    }

    // The guest's name (written by the toolstack, not by the guest); null if it has none.
    private async Task<string?> ReadDomainNameAsync()
    {
        try
        {
            string? name = await _host.Store.ReadAsync($"/local/domain/{Frontend.Value}/name").ConfigureAwait(false);
            return string.IsNullOrEmpty(name) ? null : name.Length > 128 ? name[..128] : name;
        }
        catch (XenStoreException)
        {
            return null;
        }
    }

    /// <summary>Writes (or, for null, removes) port-status/N; never recreates a backend directory the toolstack removed.</summary>
    private async Task PublishPortStatusAsync(int port, string? status)
    {
        XenStoreConnection xs = _host.Store;
        string path = $"{BackendPath}/{PortStatus.Directory}/{port}";
        await xs.TransactAsync(async tx =>
        {
            if (await xs.ReadAsync(BackendPath, tx).ConfigureAwait(false) is null || await xs.ReadAsync(path, tx).ConfigureAwait(false) == status)
            {
                return false;
            }
            if (status is null)
            {
                await xs.RemoveAsync(path, tx).ConfigureAwait(false);
            }
            else
            {
                await xs.WriteAsync(path, status, tx).ConfigureAwait(false);
            }
            return true;
        }).ConfigureAwait(false);
    }

    private async Task DetachLockedAsync(int port, bool keepAssignment)
    {
        VusbController c = _controller!;
        IUsbHostDevice? device = await _host.Loop.InvokeAsync(() => c.DetachDevice(port)).ConfigureAwait(false);
        string? busId = _assigned[port];
        if (device is not null)
        {
            // Dispose ends the device's transfers at once; the hand-back to dom0 (drivers bound again)
            // runs off the loop and is awaited here, bounded only by the device itself.
            await _host.Loop.InvokeAsync(device.Dispose).ConfigureAwait(false);
            long start = System.Diagnostics.Stopwatch.GetTimestamp();
            if (await Task.WhenAny(device.Released, Task.Delay(s_releaseWarning)).ConfigureAwait(false) != device.Released)
            {
                _logger.DeviceReleaseSlow(Frontend.Value, DevId, port, device.BusId, s_releaseWarning.TotalSeconds);
                await device.Released.ConfigureAwait(false);
            }
            double handback = System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalMilliseconds;
            _logger.DeviceDetached(Frontend.Value, DevId, port, busId ?? device.BusId, handback);
            if (keepAssignment)
            {
                Audit(AuditAction.Unplug, port, busId ?? device.BusId, "unplugged; the port waits for it");
            }
        }
        if (!keepAssignment && busId is not null)
        {
            string what = _dead ? "detached: the guest domain is gone; back to dom0"
                : device is null && UsbSysfs.IsValidBusId(busId) && _host.Usb.Find(busId) is null ? "detached while unplugged: the port is free again"
                : "detached; back to dom0";
            Audit(AuditAction.Detach, port, busId, what);
            _deviceInfo[port] = null;
            _registry.ReleaseBusId(busId, this);
            _assigned[port] = null;
        }
    }

    private void OnRingError(VusbController controller)
    {
        // Stop this controller only: Closing makes xen-hcd remove its HCD; a frontend that comes back gets a fresh ring.
        _ = CloseAfterAsync(serveWhileClosing: false);
    }

    private void OnControllerFailed(VusbController controller)
    {
        // Our own failure: the controller answers what was in flight and serves in closing mode; tell the
        // frontend to close, and release the rings once it is Closed.
        _ = CloseAfterAsync(serveWhileClosing: true);
    }

    private async Task CloseAfterAsync(bool serveWhileClosing)
    {
        try
        {
            using (await _lock.LockAsync(_cts.Token).ConfigureAwait(false))
            {
                if (_state is XenbusState.Closing or XenbusState.Closed || _dead)
                {
                    return;
                }
                if (!serveWhileClosing)
                {
                    await DisconnectLockedAsync(releaseDevices: false).ConfigureAwait(false);
                }
                await WriteStateAsync(XenbusState.Closing).ConfigureAwait(false);
            }
        }
        catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or XenStoreException or XenStoreConnectionClosedException)
        {
            // The controller is being torn down anyway.
        }
    }

    /// <summary>
    /// Writes our xenbus state, unless the toolstack removed the backend directory meanwhile: a write would
    /// make it again, a zombie node that nobody removes.
    /// </summary>
    private async Task WriteStateAsync(XenbusState state)
    {
        XenStoreConnection xs = _host.Store;
        string text = ((int)state).ToString(CultureInfo.InvariantCulture);
        bool written = await xs.TransactAsync(async tx =>
        {
            if (await xs.ReadAsync(BackendPath, tx).ConfigureAwait(false) is null)
            {
                return false;
            }
            await xs.WriteAsync($"{BackendPath}/state", text, tx).ConfigureAwait(false);
            return true;
        }).ConfigureAwait(false);
        _state = state;
        if (written)
        {
            _logger.BackendState(Frontend.Value, DevId, state);
        }
    }
}
