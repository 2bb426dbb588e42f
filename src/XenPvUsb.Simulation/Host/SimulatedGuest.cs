using Microsoft.Extensions.Logging;
using XenPvUsb.Simulation.Guest;
using XenPvUsb.Simulation.Xen;
using XenPvUsb.Xen;
using XenPvUsb.XenStore;

namespace XenPvUsb.Simulation.Host;

/// <summary>A simulated guest domain: its own xenstore connection (as that domain), grant table, and PVUSB frontends.</summary>
public sealed class SimulatedGuest : IAsyncDisposable
{
    private readonly SimulatedXenHost _host;
    private readonly ILogger _logger;
    private readonly List<SimulatedFrontend> _frontends = new();

    internal SimulatedGuest(SimulatedXenHost host, DomId id, string name, XenStoreConnection store, GuestGrantTable grants, ILogger logger)
    {
        _host = host;
        Id = id;
        Name = name;
        Store = store;
        Grants = grants;
        _logger = logger;
    }

    public DomId Id { get; }

    public string Name { get; }

    public XenStoreConnection Store { get; }

    public GuestGrantTable Grants { get; }

    /// <summary>
    /// The guest's xenbus probing device/vusb/&lt;devid&gt; (it appears when the toolstack creates the
    /// controller), then xen-hcd connecting to it.
    /// </summary>
    public async Task<SimulatedFrontend> ConnectFrontendAsync(int devId, bool startEventThread = true, TimeSpan? timeout = null, CancellationToken cancellationToken = default)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        cts.CancelAfter(timeout ?? TimeSpan.FromSeconds(20));
        string path = $"/local/domain/{Id.Value}/device/vusb/{devId}/state";
        await using (XenStoreWatch watch = await Store.WatchAsync(path, cts.Token).ConfigureAwait(false))
        {
            while (await Store.ReadAsync(path, cancellationToken: cts.Token).ConfigureAwait(false) != "1")
            {
                await watch.Events.ReadAsync(cts.Token).ConfigureAwait(false);
            }
        }
        var fe = new SimulatedFrontend(Id, devId, Store, Grants, _host.EventChannels, _logger);
        await fe.ConnectAsync(startEventThread, cts.Token).ConfigureAwait(false);
        _frontends.Add(fe);
        return fe;
    }

    public async ValueTask DisposeAsync()
    {
        foreach (SimulatedFrontend fe in _frontends)
        {
            await fe.DisposeAsync().ConfigureAwait(false);
        }
        _frontends.Clear();
        await Store.DisposeAsync().ConfigureAwait(false);
    }
}
