using System.Globalization;
using Microsoft.Extensions.Logging;
using XenPvUsb.Logging;
using XenPvUsb.Usb;
using XenPvUsb.Xen;
using XenPvUsb.XenStore;

namespace XenPvUsb.Backend;

/// <summary>
/// Finds the virtual host controllers the toolstack creates under backend/vusb and keeps one
/// <see cref="VusbBackend"/> per controller. One watch covers the whole subtree; the event path
/// says which controller changed. A failure in one controller is logged and stops only that one.
/// </summary>
public sealed class BackendRegistry : IAsyncDisposable
{
    private readonly BackendHost _host;
    private readonly ILogger _logger;
    private readonly Dictionary<(ushort Dom, int Dev), VusbBackend> _backends = new();
    private readonly Dictionary<string, (VusbBackend Backend, int Port)> _busIds = new(StringComparer.Ordinal);
    private readonly Lock _lock = new();
    private readonly CancellationTokenSource _cts = new();
    private readonly string _root;
    private XenStoreWatch? _vusbWatch;
    private XenStoreWatch? _releaseWatch;
    private Task? _vusbLoop;
    private Task? _releaseLoop;

    public BackendRegistry(BackendHost host)
    {
        _host = host;
        _logger = host.LoggerFactory.CreateLogger("XenPvUsb.Backend");
        _root = $"/local/domain/{host.Self.Value}/backend/vusb";
    }

    public int Count
    {
        get
        {
            lock (_lock)
            {
                return _backends.Count;
            }
        }
    }

    /// <summary>
    /// Starts watching, after a first scan of what is there already: when this returns, every existing
    /// controller is served or re-adopted (and its present devices opened), stale ones are removed.
    /// </summary>
    public async Task StartAsync(CancellationToken cancellationToken = default)
    {
        _vusbWatch = await _host.Store.WatchAsync(_root, cancellationToken).ConfigureAwait(false);
        _releaseWatch = await _host.Store.WatchAsync("@releaseDomain", cancellationToken).ConfigureAwait(false);
        _host.Usb.Hotplug += OnHotplug;
        // Events that arrive meanwhile wait in the watch's channel; the loop starts after the scan, so the
        // two never work on one controller at once.
        await RescanAsync(null).ConfigureAwait(false);
        _vusbLoop = VusbLoopAsync(_vusbWatch);
        _releaseLoop = ReleaseLoopAsync(_releaseWatch);
        _logger.RegistryStarted(_root);
    }

    internal bool TryClaimBusId(string busId, VusbBackend backend, int port)
    {
        lock (_lock)
        {
            if (_busIds.TryGetValue(busId, out (VusbBackend Backend, int Port) owner) && (owner.Backend != backend || owner.Port != port))
            {
                return false;
            }
            _busIds[busId] = (backend, port);
            return true;
        }
    }

    internal void ReleaseBusId(string busId, VusbBackend backend)
    {
        lock (_lock)
        {
            if (_busIds.TryGetValue(busId, out (VusbBackend Backend, int Port) owner) && owner.Backend == backend)
            {
                _busIds.Remove(busId);
            }
        }
    }

    internal VusbBackend? Find(DomId frontend, int devId)
    {
        lock (_lock)
        {
            return _backends.GetValueOrDefault((frontend.Value, devId));
        }
    }

    /// <summary>How long a stopping daemon lets requests in flight finish before answering them IOERROR.</summary>
    public static TimeSpan SuspendGrace { get; set; } = TimeSpan.FromMilliseconds(500);

    /// <summary>
    /// Stops serving as a daemon that will be restarted does: every controller is left for a successor
    /// (see <see cref="VusbBackend.SuspendAsync"/>); xenstore is not touched and no device goes back to dom0.
    /// </summary>
    public async ValueTask DisposeAsync() => await StopAsync(crash: false).ConfigureAwait(false);

    /// <summary>Tests: the daemon's process dies: connections end as the kernel ends them, journals as they stand.</summary>
    internal Task CrashAsync() => StopAsync(crash: true);

    private async Task StopAsync(bool crash)
    {
        _host.Usb.Hotplug -= OnHotplug;
        await _cts.CancelAsync().ConfigureAwait(false);
        foreach (XenStoreWatch? w in new[] { _vusbWatch, _releaseWatch })
        {
            if (w is not null)
            {
                try
                {
                    await w.DisposeAsync().ConfigureAwait(false);
                }
                catch (Exception e) when (e is XenStoreException or XenStoreConnectionClosedException)
                {
                }
            }
        }
        foreach (Task? t in new[] { _vusbLoop, _releaseLoop })
        {
            if (t is not null)
            {
                await t.ConfigureAwait(false);
            }
        }
        VusbBackend[] all;
        lock (_lock)
        {
            all = [.. _backends.Values];
            _backends.Clear();
        }
        // All at once: each gives its requests in flight the same grace, so stopping takes that long, not that times N.
        await Task.WhenAll(all.Select(b => crash ? b.CrashAsync() : b.SuspendAsync(SuspendGrace))).ConfigureAwait(false);
        _cts.Dispose();
    }

    private async Task VusbLoopAsync(XenStoreWatch watch)
    {
        try
        {
            while (await watch.Events.WaitToReadAsync(_cts.Token).ConfigureAwait(false))
            {
                while (watch.Events.TryRead(out string? path))
                {
                    await OnVusbEventAsync(path).ConfigureAwait(false);
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
        catch (XenStoreConnectionClosedException)
        {
        }
    }

    private async Task OnVusbEventAsync(string path)
    {
        if (path.Length <= _root.Length || path[_root.Length] != '/')
        {
            await RescanAsync(null).ConfigureAwait(false);
            return;
        }
        string[] parts = path[(_root.Length + 1)..].Split('/');
        if (!ushort.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out ushort dom))
        {
            return;
        }
        if (parts.Length == 1 || !int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int dev))
        {
            await RescanAsync(dom).ConfigureAwait(false);
            return;
        }
        await EnsureAsync(dom, dev, changed: parts.Length > 2).ConfigureAwait(false);
    }

    private async Task RescanAsync(ushort? onlyDom)
    {
        XenStoreConnection xs = _host.Store;
        var seen = new HashSet<(ushort, int)>();
        IReadOnlyList<string> doms = onlyDom is { } d ? [d.ToString(CultureInfo.InvariantCulture)] : await xs.DirectoryAsync(_root).ConfigureAwait(false);
        foreach (string domText in doms)
        {
            if (!ushort.TryParse(domText, NumberStyles.None, CultureInfo.InvariantCulture, out ushort dom))
            {
                continue;
            }
            foreach (string devText in await xs.DirectoryAsync($"{_root}/{domText}").ConfigureAwait(false))
            {
                if (int.TryParse(devText, NumberStyles.None, CultureInfo.InvariantCulture, out int dev))
                {
                    seen.Add((dom, dev));
                    await EnsureAsync(dom, dev, changed: false).ConfigureAwait(false);
                }
            }
        }
        List<VusbBackend> gone = new();
        lock (_lock)
        {
            foreach (KeyValuePair<(ushort Dom, int Dev), VusbBackend> kv in _backends)
            {
                if ((onlyDom is null || kv.Key.Dom == onlyDom) && !seen.Contains(kv.Key))
                {
                    gone.Add(kv.Value);
                }
            }
        }
        foreach (VusbBackend b in gone)
        {
            await RemoveAsync(b).ConfigureAwait(false);
        }
    }

    /// <summary>Logs the counters of every controller that has a connection (each on the loop thread); returns how many.</summary>
    public async Task<int> LogCountersAsync()
    {
        VusbBackend[] all;
        lock (_lock)
        {
            all = [.. _backends.Values];
        }
        int logged = 0;
        foreach (VusbBackend b in all.OrderBy(b => (b.Frontend.Value, b.DevId)))
        {
            if (await b.LogCountersAsync().ConfigureAwait(false))
            {
                logged++;
            }
        }
        return logged;
    }

    private async Task EnsureAsync(ushort dom, int dev, bool changed)
    {
        VusbBackend? backend;
        lock (_lock)
        {
            backend = _backends.GetValueOrDefault((dom, dev));
        }
        try
        {
            bool exists = await _host.Store.ReadAsync($"{_root}/{dom}/{dev}").ConfigureAwait(false) is not null;
            if (backend is not null)
            {
                if (!exists)
                {
                    await RemoveAsync(backend).ConfigureAwait(false);
                }
                else if (changed)
                {
                    await backend.OnBackendChangedAsync().ConfigureAwait(false);
                }
                return;
            }
            if (!exists)
            {
                return;
            }
            if (!await _host.Store.IsDomainIntroducedAsync(new DomId(dom)).ConfigureAwait(false))
            {
                // A leftover of a dead domain (destroyed while the daemon was down, or whose nodes nobody
                // removed): never served, its devices never claimed.
                _logger.StaleController(dom, dev);
                List<string> assigned = await AssignedBusIdsAsync(dom, dev).ConfigureAwait(false);
                bool domainGone = await _host.Store.ReadAsync($"/local/domain/{dom}").ConfigureAwait(false) is null;
                await VusbBackend.RemoveNodesAsync(_host, _logger, new DomId(dom), dev, includeLibxl: domainGone).ConfigureAwait(false);
                // Its devices were closed by a predecessor without hand-back: dom0 gets them back now,
                // unless another controller serves one.
                foreach (string busId in assigned)
                {
                    bool taken;
                    lock (_lock)
                    {
                        taken = _busIds.ContainsKey(busId);
                    }
                    if (!taken)
                    {
                        await _host.Usb.HandBackAsync(busId).ConfigureAwait(false);
                    }
                }
                return;
            }
            backend = new VusbBackend(_host, this, new DomId(dom), dev);
            if (await backend.InitialiseAsync().ConfigureAwait(false))
            {
                lock (_lock)
                {
                    _backends[(dom, dev)] = backend;
                }
            }
            else
            {
                await backend.DisposeAsync().ConfigureAwait(false);
            }
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // Contain it: this controller stops, the others go on.
            _logger.BackendFailed(dom, dev, e);
            if (backend is not null)
            {
                await RemoveAsync(backend).ConfigureAwait(false);
            }
        }
    }

    private async Task<List<string>> AssignedBusIdsAsync(ushort dom, int dev)
    {
        var busIds = new List<string>();
        string be = $"{_root}/{dom}/{dev}";
        foreach (string port in await _host.Store.DirectoryAsync($"{be}/port").ConfigureAwait(false))
        {
            string? busId = await _host.Store.ReadAsync($"{be}/port/{port}").ConfigureAwait(false);
            if (!string.IsNullOrEmpty(busId) && Host.UsbSysfs.IsValidBusId(busId))
            {
                busIds.Add(busId);
            }
        }
        return busIds;
    }

    private async Task RemoveAsync(VusbBackend backend)
    {
        lock (_lock)
        {
            if (!_backends.Remove((backend.Frontend.Value, backend.DevId)))
            {
                return;
            }
        }
        try
        {
            await backend.DisposeAsync().ConfigureAwait(false);
        }
        catch (Exception e)
        {
            _logger.BackendFailed(backend.Frontend.Value, backend.DevId, e);
        }
    }

    private async Task ReleaseLoopAsync(XenStoreWatch watch)
    {
        try
        {
            while (await watch.Events.WaitToReadAsync(_cts.Token).ConfigureAwait(false))
            {
                while (watch.Events.TryRead(out _))
                {
                }
                VusbBackend[] all;
                lock (_lock)
                {
                    all = [.. _backends.Values];
                }
                foreach (VusbBackend b in all)
                {
                    try
                    {
                        if (!await _host.Store.IsDomainIntroducedAsync(b.Frontend).ConfigureAwait(false))
                        {
                            await b.OnDomainGoneAsync().ConfigureAwait(false);
                            await RemoveAsync(b).ConfigureAwait(false);
                        }
                    }
                    catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
                    {
                        // That backend was removed meanwhile.
                    }
                    catch (Exception e) when (e is XenStoreException)
                    {
                        _logger.BackendFailed(b.Frontend.Value, b.DevId, e);
                    }
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
        catch (XenStoreConnectionClosedException)
        {
        }
    }

    private void OnHotplug(UsbHotplugEvent e)
    {
        VusbBackend[] all;
        lock (_lock)
        {
            all = [.. _backends.Values];
        }
        foreach (VusbBackend b in all)
        {
            _ = HandleHotplugAsync(b, e);
        }
    }

    private async Task HandleHotplugAsync(VusbBackend b, UsbHotplugEvent e)
    {
        try
        {
            await b.OnHotplugAsync(e).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            _logger.BackendFailed(b.Frontend.Value, b.DevId, ex);
        }
    }
}
