using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Nito.AsyncEx;
using XenPvUsb.Backend;
using XenPvUsb.Logging;
using XenPvUsb.Usb;
using XenPvUsb.Xen;
using XenPvUsb.XenStore;

namespace XenPvUsb.Toolstack;

/// <summary>
/// The daemon's side of persistent assignments: applies them (<see cref="AssignmentApplier"/>) at start, when a
/// domain appears (@introduceDomain) or goes, when a controller appears or goes under backend/vusb (also those
/// xl makes from <c>usbctrl = [ "type=pv" ]</c>), when a device is plugged in or out, when the assignment or policy
/// file changes, and every <see cref="RecheckInterval"/> as a safety net. Triggers are coalesced: one pass runs at a
/// time, and a trigger during a pass makes one more.
/// </summary>
/// <remarks>
/// A device a rule follows by what it is (not by its port path) that is unplugged has its port emptied, so that it
/// is attached again wherever it is plugged back in. Refusals and policy decisions go to the audit trail once per
/// domain, device and reason, not on every pass; an attach the daemon refused is not retried until the device is
/// plugged again or the files change (or, for a device another controller held, until a controller goes). Nothing here runs on the event loop, and a
/// failing pass is logged and does not stop later ones. A guest can trigger nothing: its writes are in its own
/// frontend directory, which is not watched.
/// </remarks>
public sealed class AssignmentService : IAsyncDisposable
{
    public static TimeSpan RecheckInterval { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>How long triggers are gathered before a pass (a domain's creation writes many nodes).</summary>
    public static TimeSpan Debounce { get; set; } = TimeSpan.FromMilliseconds(200);

    private readonly BackendHost _host;
    private readonly AssignmentSources _sources;
    private readonly ILogger _logger;
    private readonly AssignmentApplier _applier;
    private readonly AsyncAutoResetEvent _kick = new();
    private readonly CancellationTokenSource _cts = new();
    private readonly ConcurrentQueue<string> _unplugged = new();
    private readonly HashSet<(ushort Dom, string BusId, string Reason)> _recorded = [];
    // Attaches the backend refused, not to try again for now, and whether a controller change may help (the device
    // was on another controller's port: one going away frees it).
    private readonly Dictionary<(ushort Dom, string BusId), bool> _refused = [];
    private readonly HashSet<(ushort Dom, int Line)> _waitingForController = [];
    private readonly ConcurrentDictionary<string, HostDevice> _seen = new(StringComparer.Ordinal);
    private readonly List<XenStoreWatch> _watches = [];
    private readonly List<Task> _watchLoops = [];
    private FileSystemWatcher[] _fileWatchers = [];
    private (DateTime, long)[] _fileStamps = [];
    private volatile bool _clearRefused;
    private volatile bool _clearConflicts;
    private Task _loop = Task.CompletedTask;
    private int _passes;

    public AssignmentService(BackendHost host, AssignmentSources sources)
    {
        _host = host;
        _sources = sources;
        _logger = host.LoggerFactory.CreateLogger("XenPvUsb.Assignments");
        _applier = new AssignmentApplier(host.Store, sources, _logger);
    }

    /// <summary>Passes completed (tests wait on it).</summary>
    public int Passes => Volatile.Read(ref _passes);

    /// <summary>Raised after each pass with what it did.</summary>
    public event Action<IReadOnlyList<AppliedAction>>? PassCompleted;

    public async Task StartAsync(CancellationToken cancellationToken = default)
    {
        _host.RuleFor = _applier.RuleFor;
        string backendRoot = $"/local/domain/{_host.Self.Value}/backend/vusb";
        foreach ((string path, Func<string, bool> relevant) in new (string, Func<string, bool>)[]
        {
            (XenStorePath.IntroduceDomain, _ => true),
            ("@releaseDomain", _ => true),
            // A controller made or removed (its directory, or the num-ports node written with it), not every port-status write.
            (backendRoot, p => Depth(p, backendRoot) <= 2 || p.EndsWith("/num-ports", StringComparison.Ordinal)),
        })
        {
            XenStoreWatch watch = await _host.Store.WatchAsync(path, cancellationToken).ConfigureAwait(false);
            _watches.Add(watch);
            _watchLoops.Add(WatchLoopAsync(watch, path == backendRoot, relevant));
        }
        _host.Usb.Hotplug += OnHotplug;
        _fileWatchers = WatchFiles();
        _fileStamps = FileStamps();
        _loop = LoopAsync();
        _kick.Set();
        _logger.AssignmentsServing(_sources.AssignmentsPath, _sources.PolicyPath);
    }

    /// <summary>Asks for a pass (tests; the daemon's triggers call it).</summary>
    public void Kick() => _kick.Set();

    private static int Depth(string path, string root) =>
        path.Length <= root.Length ? 0 : path[(root.Length + 1)..].Count(c => c == '/') + 1;

    private async Task WatchLoopAsync(XenStoreWatch watch, bool controllers, Func<string, bool> relevant)
    {
        try
        {
            while (await watch.Events.WaitToReadAsync(_cts.Token).ConfigureAwait(false))
            {
                bool any = false;
                while (watch.Events.TryRead(out string? path))
                {
                    any |= relevant(path);
                }
                if (any)
                {
                    if (controllers)
                    {
                        _clearConflicts = true; // a port freed elsewhere may let a refused attach through now
                    }
                    _kick.Set();
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

    // On the event loop thread: note it and go.
    private void OnHotplug(UsbHotplugEvent e)
    {
        if (!e.Added)
        {
            _unplugged.Enqueue(e.BusId);
        }
        else
        {
            RemoveRefused(r => r.BusId == e.BusId);
        }
        _kick.Set();
    }

    private FileSystemWatcher[] WatchFiles()
    {
        var watchers = new List<FileSystemWatcher>();
        foreach (string? dir in new[] { _sources.AssignmentsPath, _sources.PolicyPath }.Select(Path.GetDirectoryName).Distinct())
        {
            if (string.IsNullOrEmpty(dir) || !Directory.Exists(dir))
            {
                continue; // the periodic recheck notices a directory made later
            }
            try
            {
                var w = new FileSystemWatcher(dir) { NotifyFilter = NotifyFilters.FileName | NotifyFilters.LastWrite | NotifyFilters.Size };
                w.Changed += (_, _) => OnFileChanged();
                w.Created += (_, _) => OnFileChanged();
                w.Deleted += (_, _) => OnFileChanged();
                w.Renamed += (_, _) => OnFileChanged();
                w.EnableRaisingEvents = true;
                watchers.Add(w);
            }
            catch (Exception e) when (e is IOException or ArgumentException or PlatformNotSupportedException or UnauthorizedAccessException)
            {
                _logger.AssignmentFilesUnwatched(dir, e.Message);
            }
        }
        return [.. watchers];
    }

    private void OnFileChanged()
    {
        _clearRefused = true;
        _kick.Set();
    }

    private (DateTime, long)[] FileStamps() =>
        [.. new[] { _sources.AssignmentsPath, _sources.PolicyPath }.Select(p =>
        {
            var f = new FileInfo(p);
            return f.Exists ? (f.LastWriteTimeUtc, f.Length) : (DateTime.MinValue, -1L);
        })];

    private async Task LoopAsync()
    {
        while (!_cts.IsCancellationRequested)
        {
            try
            {
                Task kicked = _kick.WaitAsync(_cts.Token);
                if (await Task.WhenAny(kicked, Task.Delay(RecheckInterval, _cts.Token)).ConfigureAwait(false) != kicked)
                {
                    (DateTime, long)[] stamps = FileStamps();
                    if (!stamps.SequenceEqual(_fileStamps))
                    {
                        _clearRefused = true;
                    }
                }
                await Task.Delay(Debounce, _cts.Token).ConfigureAwait(false);
                _fileStamps = FileStamps();
                await PassAsync().ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (_cts.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e) when (e is XenStoreException or XenStoreConnectionClosedException or IOException or UnauthorizedAccessException or ToolstackException)
            {
                _logger.AssignmentPassFailed(e);
            }
            finally
            {
                Interlocked.Increment(ref _passes);
            }
        }
    }

    private async Task PassAsync()
    {
        CancellationToken ct = _cts.Token;
        if (_clearRefused)
        {
            _clearRefused = false;
            lock (_refused)
            {
                _refused.Clear();
            }
        }
        if (_clearConflicts)
        {
            _clearConflicts = false;
            lock (_refused)
            {
                foreach ((ushort, string) key in _refused.Where(kv => kv.Value).Select(kv => kv.Key).ToList())
                {
                    _refused.Remove(key);
                }
            }
        }
        await FreePortsOfMovedDevicesAsync(ct).ConfigureAwait(false);

        IReadOnlyList<AppliedAction> results = await _applier.ApplyAsync(skip: Skip, cancellationToken: ct).ConfigureAwait(false);
        foreach (HostDevice d in _applier.LastDevices)
        {
            _seen[d.Info.BusId] = d;
        }
        IReadOnlyList<RunningDomain> running = _applier.LastDomains;
        Forget(running);
        foreach (AppliedAction r in results)
        {
            Report(r, running);
        }
        PassCompleted?.Invoke(results);
    }

    private void RemoveRefused(Func<(ushort Dom, string BusId), bool> which)
    {
        lock (_refused)
        {
            foreach ((ushort, string) key in _refused.Keys.Where(which).ToList())
            {
                _refused.Remove(key);
            }
        }
    }

    private bool Skip(DomId domain, string busId)
    {
        lock (_refused)
        {
            return _refused.ContainsKey((domain.Value, busId));
        }
    }

    /// <summary>
    /// Ports holding a device that was unplugged, where the domain's rule follows the device by what it is (not by
    /// the port path): emptied, so that the device is attached again wherever it comes back.
    /// </summary>
    private async Task FreePortsOfMovedDevicesAsync(CancellationToken ct)
    {
        if (_unplugged.IsEmpty)
        {
            return;
        }
        var gone = new HashSet<string>(StringComparer.Ordinal);
        while (_unplugged.TryDequeue(out string? busId))
        {
            gone.Add(busId);
        }
        IReadOnlyList<AssignmentRule> rules = AssignmentFile.Load(_sources.AssignmentsPath).Rules;
        foreach (RunningDomain d in await _applier.RunningDomainsAsync(ct).ConfigureAwait(false))
        {
            foreach (PlannedController c in d.Controllers)
            {
                for (int p = 1; p <= c.Ports.Count; p++)
                {
                    string? busId = c.Ports[p - 1];
                    if (busId is null || !gone.Contains(busId) || !_seen.TryGetValue(busId, out HostDevice? seen) || _host.Usb.Find(busId) is not null)
                    {
                        continue;
                    }
                    AssignmentRule? rule = AssignmentFile.FirstMatch(rules, seen.Info, seen.InterfaceClasses);
                    if (rule is null || rule.Match.Path is not null || !string.Equals(rule.Domain, d.Name, StringComparison.Ordinal))
                    {
                        continue;
                    }
                    try
                    {
                        await _applier.Toolstack.DetachAsync(d.Id, c.DevId, p, ct).ConfigureAwait(false);
                        string ruleText = AssignmentApplier.Describe(rule);
                        _logger.AssignmentPortFreed(d.Name, d.Id.Value, c.DevId, p, busId, ruleText);
                    }
                    catch (Exception e) when (e is ToolstackException or XenStoreException)
                    {
                        _logger.AssignmentActionFailed(d.Name, e.Message);
                    }
                }
            }
        }
        foreach (string busId in gone)
        {
            if (_host.Usb.Find(busId) is null)
            {
                _seen.TryRemove(busId, out _);
            }
        }
    }

    private void Forget(IReadOnlyList<RunningDomain> running)
    {
        var ids = running.Select(d => d.Id.Value).ToHashSet();
        _recorded.RemoveWhere(r => !ids.Contains(r.Dom));
        _waitingForController.RemoveWhere(r => !ids.Contains(r.Dom));
        RemoveRefused(r => !ids.Contains(r.Dom));
    }

    private void Report(AppliedAction r, IReadOnlyList<RunningDomain> running)
    {
        AssignmentRule rule = r.Action.Rule;
        string ruleText = AssignmentApplier.Describe(rule);
        switch (r.Action)
        {
            case CreateControllerAction c when r.Done:
                _logger.AssignmentControllerMade(rule.Domain, c.Domain.Value, r.DevId ?? -1, c.Spec.UsbVersion, c.Spec.Ports, ruleText);
                break;
            case CreateControllerAction c:
                _logger.AssignmentActionFailed(rule.Domain, r.Outcome);
                break;
            case AttachAction a when r.Done:
                _logger.AssignmentAttached(rule.Domain, a.Domain.Value, a.BusId, r.Outcome, ruleText);
                break;
            case AttachAction a:
                // The daemon's own refusal is in the audit trail already (the backend recorded it); not retried for now.
                lock (_refused)
                {
                    _refused[(a.Domain.Value, a.BusId)] = r.Outcome.Contains("assigned to another controller", StringComparison.Ordinal);
                }
                _logger.AssignmentActionFailed(rule.Domain, r.Outcome);
                break;
            case RefusalAction f when f.Reason.Contains("asks for no controller", StringComparison.Ordinal):
                // Not a refusal: the domain has no controller yet (xl makes its usbctrl after the domain appears).
                if (_waitingForController.Add((f.Domain.Value, rule.Line)))
                {
                    _logger.AssignmentWaitsForController(rule.Domain, f.Domain.Value, ruleText);
                }
                break;
            case RefusalAction f:
                if (!_recorded.Add((f.Domain.Value, f.BusId, f.Reason)))
                {
                    break;
                }
                UsbDeviceInfo? info = _host.Usb.Find(f.BusId) ?? _seen.GetValueOrDefault(f.BusId)?.Info;
                _host.Audit.Record(new AuditRecord(f.ByPolicy ? AuditAction.Policy : AuditAction.Refuse,
                    $"{AuditRecord.DeviceText(f.BusId, info)} not given to {rule.Domain} (domain {f.Domain.Value}): {f.Reason}; rule {ruleText}")
                {
                    DomId = f.Domain,
                    Domain = rule.Domain,
                    Rule = ruleText,
                    Reason = f.Reason,
                }.WithDevice(f.BusId, info));
                break;
        }
    }

    public async ValueTask DisposeAsync()
    {
        _host.Usb.Hotplug -= OnHotplug;
        if (_host.RuleFor == _applier.RuleFor)
        {
            _host.RuleFor = null;
        }
        await _cts.CancelAsync().ConfigureAwait(false);
        foreach (FileSystemWatcher w in _fileWatchers)
        {
            w.Dispose();
        }
        foreach (XenStoreWatch w in _watches)
        {
            try
            {
                await w.DisposeAsync().ConfigureAwait(false);
            }
            catch (Exception e) when (e is XenStoreException or XenStoreConnectionClosedException)
            {
            }
        }
        await Task.WhenAll(_watchLoops).ConfigureAwait(false);
        try
        {
            await _loop.ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
        }
        _cts.Dispose();
    }
}

internal static partial class AssignmentServiceLog
{
    [LoggerMessage(EventId = 261, Level = LogLevel.Information, Message = "persistent assignments from {Assignments}, policy {Policy}: applied on domain creation, hotplug and file changes")]
    public static partial void AssignmentsServing(this ILogger logger, string assignments, string policy);

    [LoggerMessage(EventId = 262, Level = LogLevel.Information, Message = "{Domain} (domain {DomId}): made controller {DevId} (USB {UsbVer}, {Ports} ports) for rule {Rule}")]
    public static partial void AssignmentControllerMade(this ILogger logger, string domain, ushort domId, int devId, int usbVer, int ports, string rule);

    [LoggerMessage(EventId = 263, Level = LogLevel.Information, Message = "{Domain} (domain {DomId}): {BusId}: {Outcome} (rule {Rule})")]
    public static partial void AssignmentAttached(this ILogger logger, string domain, ushort domId, string busId, string outcome, string rule);

    [LoggerMessage(EventId = 264, Level = LogLevel.Warning, Message = "{Domain}: {Outcome}")]
    public static partial void AssignmentActionFailed(this ILogger logger, string domain, string outcome);

    [LoggerMessage(EventId = 265, Level = LogLevel.Information, Message = "{Domain} (domain {DomId}) has no controller; rule {Rule} waits for one (add controller=2:8 to the rule, or usbctrl = [ \"type=pv\" ] to the domain's config)")]
    public static partial void AssignmentWaitsForController(this ILogger logger, string domain, ushort domId, string rule);

    [LoggerMessage(EventId = 266, Level = LogLevel.Information, Message = "{Domain} (domain {DomId}): controller {DevId} port {Port} freed: {BusId} was unplugged, and rule {Rule} follows the device wherever it is plugged back in")]
    public static partial void AssignmentPortFreed(this ILogger logger, string domain, ushort domId, int devId, int port, string busId, string rule);

    [LoggerMessage(EventId = 267, Level = LogLevel.Error, Message = "applying the persistent assignments failed; the next trigger tries again")]
    public static partial void AssignmentPassFailed(this ILogger logger, Exception e);

    [LoggerMessage(EventId = 268, Level = LogLevel.Warning, Message = "cannot watch {Directory} for changes ({Reason}); rechecked every minute instead")]
    public static partial void AssignmentFilesUnwatched(this ILogger logger, string directory, string reason);
}
