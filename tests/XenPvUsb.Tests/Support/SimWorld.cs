using XenPvUsb.Backend;
using XenPvUsb.Simulation.Devices;
using XenPvUsb.Simulation.Guest;
using XenPvUsb.Simulation.Host;
using XenPvUsb.Toolstack;
using XenPvUsb.Xen;
using XenPvUsb.XenStore;

namespace XenPvUsb.Tests.Support;

/// <summary>
/// A simulated host with the real backend serving it: the daemon's BackendRegistry on an event loop,
/// the toolstack library as the CLI uses it, and helpers to make guests with connected frontends.
/// </summary>
internal sealed class SimWorld : IAsyncDisposable
{
    private int _nextBus = 1;

    private SimWorld(string dir, SimulatedXenHost host, EventLoop loop, XenStoreConnection dom0, DecoratingUsbHost usb, BackendRegistry registry)
    {
        Directory = dir;
        Host = host;
        Loop = loop;
        Dom0 = dom0;
        Usb = usb;
        Registry = registry;
        Toolstack = new VusbToolstack(dom0, host.SysfsRoot);
    }

    /// <summary>The USB host the backend sees: the emulated one, with wrappers (slow, faulty devices) where set.</summary>
    public DecoratingUsbHost Usb { get; }

    public string Directory { get; }

    public SimulatedXenHost Host { get; }

    public EventLoop Loop { get; }

    public XenStoreConnection Dom0 { get; }

    public BackendRegistry Registry { get; private set; }

    public VusbToolstack Toolstack { get; }

    /// <summary>Written into the controllers <see cref="AddGuestAsync"/> makes (null: the daemon's default, copy).</summary>
    public GrantMode? GrantMode { get; set; }

    /// <summary>Written into the controllers <see cref="AddGuestAsync"/> makes (false: merge-bulk-in = 0).</summary>
    public bool MergeBulkIn { get; set; } = true;

    /// <summary>Loops beyond <see cref="Loop"/> that controllers are sharded over (none unless StartAsync was asked for more).</summary>
    public IReadOnlyList<EventLoop> ExtraLoops { get; private set; } = [];

    public static async Task<SimWorld> StartAsync(int loops = 1)
    {
        string dir = Path.Combine(Path.GetTempPath(), $"xenpvusb-test-{Guid.NewGuid():N}");
        SimulatedXenHost host = await SimulatedXenHost.StartAsync(dir);
        var loop = new EventLoop();
        XenStoreConnection dom0 = await XenStoreConnection.ConnectAsync(host.Dom0SocketPath);
        var usb = new DecoratingUsbHost(host.Usb);
        var world = new SimWorld(dir, host, loop, dom0, usb, null!);
        world.ExtraLoops = [.. Enumerable.Range(1, loops - 1).Select(_ => new EventLoop())];
        world.Registry = world.NewRegistry();
        await world.Registry.StartAsync();
        return world;
    }

    /// <summary>Where the backend keeps its recovery journals (the daemon's /run/xenpvusb).</summary>
    public string StateDirectory => Path.Combine(Directory, "state");

    /// <summary>Cap on each new controller's usbfs memory in flight (the daemon's default unless set).</summary>
    public long UsbfsBudget
    {
        get => _usbfsBudget;
        set
        {
            _usbfsBudget = value;
            if (_backendHost is not null)
            {
                _backendHost.UsbfsBudget = value;
            }
        }
    }

    private long _usbfsBudget = VusbController.DefaultUsbfsBudget;
    private BackendHost? _backendHost;
    private XenPvUsb.Logging.IAuditTrail? _audit;

    /// <summary>The backend host the current registry runs on.</summary>
    public BackendHost Backend => _backendHost!;

    /// <summary>Where the backends' audit records go (null: logged only); kept across restarts.</summary>
    public XenPvUsb.Logging.IAuditTrail? Audit
    {
        get => _audit;
        set
        {
            _audit = value;
            if (_backendHost is not null && value is not null)
            {
                _backendHost.Audit = value;
            }
        }
    }

    private BackendRegistry NewRegistry()
    {
        BackendHost host = Host.CreateBackendHost(Dom0, Loop, usb: Usb);
        host.StateDirectory = StateDirectory;
        host.UsbfsBudget = _usbfsBudget;
        host.SysfsRoot = Host.SysfsRoot;
        host.ControllerLoops = [Loop, .. ExtraLoops];
        if (_audit is not null)
        {
            host.Audit = _audit;
        }
        _backendHost = host;
        return new BackendRegistry(host);
    }

    /// <summary>The daemon's process dies (SIGKILL) and systemd starts a new one, after <paramref name="whileDown"/>.</summary>
    public async Task CrashAndRestartAsync(Func<Task>? whileDown = null)
    {
        await Registry.CrashAsync();
        if (whileDown is not null)
        {
            await whileDown();
        }
        Registry = NewRegistry();
        await Registry.StartAsync();
    }

    /// <summary>Plugs a stick made from a fresh image and returns its bus id and the image's bytes.</summary>
    public (string BusId, byte[] Content) PlugStickWithContent(long bytes = 1024 * 1024, int seed = 1)
    {
        string image = Path.Combine(Directory, $"stick-{_nextBus}.img");
        StickImage.Create(image, bytes, seed);
        byte[] content = File.ReadAllBytes(image);
        return (Plug(new MassStorageDevice(image, readOnly: false)), content);
    }

    /// <summary>Stops the backend (as a daemon stopping) and starts a fresh one on the same host and loop.</summary>
    public async Task RestartRegistryAsync(Func<Task>? whileStopped = null)
    {
        await Registry.DisposeAsync();
        if (whileStopped is not null)
        {
            await whileStopped();
        }
        Registry = NewRegistry();
        await Registry.StartAsync();
    }

    /// <summary>Plugs a device at a fresh bus id and returns the id.</summary>
    public string Plug(EmulatedUsbDevice device)
    {
        string busId = $"1-{_nextBus++}";
        Host.Usb.Plug(busId, device);
        return busId;
    }

    public string PlugStick(long bytes = 1024 * 1024, int seed = 1, bool readOnly = false)
    {
        string image = Path.Combine(Directory, $"stick-{_nextBus}.img");
        StickImage.Create(image, bytes, seed);
        return Plug(new MassStorageDevice(image, readOnly));
    }

    /// <summary>A guest with one controller, its frontend connected, and the given devices attached to ports 1, 2, ...</summary>
    public async Task<GuestHandle> AddGuestAsync(string name, int ports = 8, int usbVersion = 2, params string[] busIds)
    {
        SimulatedGuest guest = await Host.CreateGuestAsync(name);
        Task<SimulatedFrontend> connecting = guest.ConnectFrontendAsync(0);
        int devId = await Toolstack.CreateControllerAsync(guest.Id, usbVersion, ports, grantMode: GrantMode, mergeBulkIn: MergeBulkIn);
        SimulatedFrontend fe = await connecting;
        await WaitForStateAsync($"/local/domain/0/backend/vusb/{guest.Id.Value}/{devId}/state", "4");
        var handle = new GuestHandle(guest, fe, devId);
        for (int i = 0; i < busIds.Length; i++)
        {
            await Toolstack.AttachAsync(guest.Id, devId, i + 1, busIds[i]);
            await fe.WaitForPortAsync(i + 1, connected: true, TimeSpan.FromSeconds(10));
        }
        return handle;
    }

    public async Task WaitForStateAsync(string path, string value, int timeoutMs = 10000)
    {
        using var cts = new CancellationTokenSource(timeoutMs);
        await using XenStoreWatch w = await Dom0.WatchAsync(path, cts.Token);
        while (await Dom0.ReadAsync(path, cancellationToken: cts.Token) != value)
        {
            await w.Events.ReadAsync(cts.Token);
        }
    }

    public async Task WaitForGoneAsync(string path, int timeoutMs = 10000)
    {
        using var cts = new CancellationTokenSource(timeoutMs);
        await using XenStoreWatch w = await Dom0.WatchAsync(path, cts.Token);
        while (await Dom0.ReadAsync(path, cancellationToken: cts.Token) is not null)
        {
            await w.Events.ReadAsync(cts.Token);
        }
    }

    /// <summary>Waits until the event loop has run everything posted before now.</summary>
    public Task DrainLoopAsync() => Loop.InvokeAsync(() => { });

    public async ValueTask DisposeAsync()
    {
        await Registry.DisposeAsync();
        await Dom0.DisposeAsync();
        Loop.Dispose();
        foreach (EventLoop l in ExtraLoops)
        {
            l.Dispose();
        }
        await Host.DisposeAsync();
        Host.Usb.Dispose();
        try
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

internal sealed record GuestHandle(SimulatedGuest Guest, SimulatedFrontend Frontend, int DevId)
{
    public DomId Id => Guest.Id;
}
