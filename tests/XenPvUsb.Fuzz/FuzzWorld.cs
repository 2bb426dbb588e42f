using XenPvUsb.Backend;
using XenPvUsb.Simulation.Devices;
using XenPvUsb.Simulation.Guest;
using XenPvUsb.Simulation.Host;
using XenPvUsb.Toolstack;
using XenPvUsb.Xen;
using XenPvUsb.XenStore;

namespace XenPvUsb.Fuzz;

/// <summary>
/// The simulated host with the real daemon serving it (BackendRegistry, VusbBackend, VusbController
/// on the EventLoop), the toolstack library as the CLI uses it, and emulated devices.
/// </summary>
public sealed class FuzzWorld : IAsyncDisposable
{
    public const long StickBytes = 1024 * 1024;

    private int _nextBus = 1;

    private FuzzWorld(string dir, SimulatedXenHost host, EventLoop loop, XenStoreConnection dom0, BackendRegistry registry, FuzzLog log)
    {
        Directory = dir;
        Host = host;
        Loop = loop;
        Dom0 = dom0;
        Registry = registry;
        Log = log;
        Toolstack = new VusbToolstack(dom0, host.SysfsRoot);
    }

    public string Directory { get; }

    public SimulatedXenHost Host { get; }

    public EventLoop Loop { get; }

    public XenStoreConnection Dom0 { get; }

    public BackendRegistry Registry { get; }

    public VusbToolstack Toolstack { get; }

    public FuzzLog Log { get; }

    public static async Task<FuzzWorld> StartAsync(FuzzLog log)
    {
        string dir = Path.Combine(Path.GetTempPath(), $"xenpvusb-fuzz-{Guid.NewGuid():N}");
        SimulatedXenHost host = await SimulatedXenHost.StartAsync(dir).ConfigureAwait(false);
        var loop = new EventLoop(log.CreateLogger("XenPvUsb.EventLoop"));
        XenStoreConnection dom0 = await XenStoreConnection.ConnectAsync(host.Dom0SocketPath).ConfigureAwait(false);
        var registry = new BackendRegistry(host.CreateBackendHost(dom0, loop, log));
        await registry.StartAsync().ConfigureAwait(false);
        return new FuzzWorld(dir, host, loop, dom0, registry, log);
    }

    public string Plug(EmulatedUsbDevice device)
    {
        string busId = $"1-{_nextBus++}";
        Host.Usb.Plug(busId, device);
        return busId;
    }

    public string PlugStick(int seed, bool readOnly)
    {
        string image = Path.Combine(Directory, $"stick-{seed}.img");
        StickImage.Create(image, StickBytes, seed);
        return Plug(new MassStorageDevice(image, readOnly));
    }

    /// <summary>A guest with one controller (8 ports, USB 2.0, the given data path), its frontend connected, devices on ports 1, 2, ...</summary>
    public async Task<(SimulatedGuest Guest, SimulatedFrontend Frontend, int DevId)> AddGuestAsync(string name, GrantMode grantMode, params string[] busIds)
    {
        SimulatedGuest guest = await Host.CreateGuestAsync(name).ConfigureAwait(false);
        Task<SimulatedFrontend> connecting = guest.ConnectFrontendAsync(0);
        int devId = await Toolstack.CreateControllerAsync(guest.Id, 2, 8, grantMode: grantMode).ConfigureAwait(false);
        SimulatedFrontend fe = await connecting.ConfigureAwait(false);
        await WaitForStateAsync(BackendStatePath(guest.Id, devId), "4").ConfigureAwait(false);
        for (int i = 0; i < busIds.Length; i++)
        {
            await Toolstack.AttachAsync(guest.Id, devId, i + 1, busIds[i]).ConfigureAwait(false);
            await fe.WaitForPortAsync(i + 1, connected: true, TimeSpan.FromSeconds(10)).ConfigureAwait(false);
        }
        return (guest, fe, devId);
    }

    public static string BackendStatePath(DomId dom, int devId) => $"/local/domain/0/backend/vusb/{dom.Value}/{devId}/state";

    public async Task<string?> ReadAsync(string path) => await Dom0.ReadAsync(path).ConfigureAwait(false);

    /// <summary>Waits until <paramref name="path"/> reads one of <paramref name="values"/>; returns the value, or null on timeout.</summary>
    public async Task<string?> WaitForStateAsync(string path, string values, int timeoutMs = 10000)
    {
        using var cts = new CancellationTokenSource(timeoutMs);
        string[] wanted = values.Split(',');
        try
        {
            await using XenStoreWatch w = await Dom0.WatchAsync(path, cts.Token).ConfigureAwait(false);
            while (true)
            {
                string? v = await Dom0.ReadAsync(path, cancellationToken: cts.Token).ConfigureAwait(false);
                if (v is not null && Array.IndexOf(wanted, v) >= 0)
                {
                    return v;
                }
                await w.Events.ReadAsync(cts.Token).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException)
        {
            return null;
        }
    }

    public async ValueTask DisposeAsync()
    {
        await Registry.DisposeAsync().ConfigureAwait(false);
        await Dom0.DisposeAsync().ConfigureAwait(false);
        Loop.Dispose();
        await Host.DisposeAsync().ConfigureAwait(false);
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
