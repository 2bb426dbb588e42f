using System.Threading.Channels;
using XenPvUsb.Simulation.XenStore;
using XenPvUsb.Xen;
using XenPvUsb.XenStore;

namespace XenPvUsb.Tests.XenStore;

/// <summary>A simulated xenstored per test, listening for dom0 and guest 1 in a per-test temp directory.</summary>
public abstract class XenStoreTestBase
{
    protected static readonly TimeSpan Timeout = TimeSpan.FromSeconds(5);
    protected static readonly DomId Guest = new(1);

    private readonly List<XenStoreConnection> _connections = [];

    protected string TempDir { get; private set; } = null!;

    protected SimulatedXenStored Server { get; private set; } = null!;

    protected string Dom0Socket => Path.Combine(TempDir, "dom0.sock");

    protected string GuestSocket => Path.Combine(TempDir, "dom1.sock");

    /// <summary>A privileged dom0 connection, opened for every test.</summary>
    protected XenStoreConnection Dom0 { get; private set; } = null!;

    [SetUp]
    public async Task SetUpServer()
    {
        TempDir = Path.Combine(Path.GetTempPath(), "xs-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(TempDir);
        Server = new SimulatedXenStored();
        Server.Listen(DomId.Dom0, Dom0Socket);
        Server.Listen(Guest, GuestSocket);
        Dom0 = await ConnectDom0Async();
    }

    [TearDown]
    public async Task TearDownServer()
    {
        foreach (XenStoreConnection connection in _connections)
        {
            await connection.DisposeAsync();
        }

        _connections.Clear();
        await Server.DisposeAsync();
        Directory.Delete(TempDir, recursive: true);
    }

    protected async Task<XenStoreConnection> ConnectDom0Async() => Track(await XenStoreConnection.ConnectAsync(Dom0Socket));

    protected async Task<XenStoreConnection> ConnectGuestAsync() => Track(await XenStoreConnection.ConnectAsync(GuestSocket));

    private XenStoreConnection Track(XenStoreConnection connection)
    {
        _connections.Add(connection);
        return connection;
    }

    protected static async Task<string> NextEventAsync(XenStoreWatch watch)
    {
        using var cts = new CancellationTokenSource(Timeout);
        return await watch.Events.ReadAsync(cts.Token);
    }

    /// <summary>Waits for the watch's registration event (xenstored fires every new watch once).</summary>
    protected static async Task<XenStoreWatch> Registered(Task<XenStoreWatch> watchTask)
    {
        XenStoreWatch watch = await watchTask;
        Assert.That(await NextEventAsync(watch), Is.EqualTo(watch.Path));
        return watch;
    }

    protected static async Task<bool> CompletesAsync(ChannelReader<string> reader)
    {
        using var cts = new CancellationTokenSource(Timeout);
        while (await reader.WaitToReadAsync(cts.Token))
        {
            reader.TryRead(out _);
        }

        return reader.Completion.IsCompleted;
    }

    protected static XsPermission[] Perms(params string[] entries) => [.. entries.Select(XsPermission.Parse)];

    /// <summary>Sets up a libxl-style backend directory owned by dom0 that the guest may read (n0, r1).</summary>
    protected async Task<string> CreateBackendDirAsync()
    {
        const string dir = "/local/domain/0/backend/vusb/1/0";
        await Dom0.MkdirAsync(dir);
        await Dom0.SetPermissionsAsync(dir, Perms("n0", "r1"));
        return dir;
    }
}
