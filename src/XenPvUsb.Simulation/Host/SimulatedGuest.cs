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
    private Task? _autoProbe;

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

    /// <summary>
    /// Acts like a guest kernel with xen-hcd loaded: every controller that appears under
    /// device/vusb gets a frontend, and every device plugged into its ports is enumerated and logged.
    /// </summary>
    public async Task StartAutoProbeAsync(CancellationToken cancellationToken = default)
    {
        XenStoreWatch watch = await Store.WatchAsync($"/local/domain/{Id.Value}/device/vusb", cancellationToken).ConfigureAwait(false);
        _autoProbe = Task.Run(async () =>
        {
            var known = new HashSet<int>();
            try
            {
                while (await watch.Events.WaitToReadAsync(cancellationToken).ConfigureAwait(false))
                {
                    while (watch.Events.TryRead(out _))
                    {
                    }
                    foreach (string d in await Store.DirectoryAsync($"/local/domain/{Id.Value}/device/vusb", cancellationToken: cancellationToken).ConfigureAwait(false))
                    {
                        if (int.TryParse(d, System.Globalization.CultureInfo.InvariantCulture, out int devId) && known.Add(devId))
                        {
                            _ = ServeControllerAsync(devId, cancellationToken);
                        }
                    }
                }
            }
            catch (Exception e) when (e is OperationCanceledException or XenStoreConnectionClosedException or XenStoreException)
            {
            }
            finally
            {
                await watch.DisposeAsync().ConfigureAwait(false);
            }
        }, cancellationToken);
    }

    private async Task ServeControllerAsync(int devId, CancellationToken cancellationToken)
    {
        try
        {
            SimulatedFrontend fe = await ConnectFrontendAsync(devId, cancellationToken: cancellationToken).ConfigureAwait(false);
            _logger.GuestControllerUp(Name, devId, fe.UsbVersion, fe.NumPorts);
            int address = 1;
            await foreach (PortEvent e in fe.PortEvents.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            {
                if (e.Speed == 0)
                {
                    _logger.GuestDeviceGone(Name, devId, e.Port);
                    continue;
                }
                GuestUsbDevice dev = await GuestUsbDevice.EnumerateAsync(fe, e.Port, address++ % 127 + 1, cancellationToken).ConfigureAwait(false);
                _logger.GuestDeviceFound(Name, devId, e.Port, dev.VendorId, dev.ProductId, dev.Product ?? "", dev.SpeedName);
            }
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            _logger.GuestProbeFailed(Name, devId, e.Message);
        }
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
