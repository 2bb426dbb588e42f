using System.Globalization;
using Microsoft.Extensions.Logging;
using XenPvUsb.Backend;
using XenPvUsb.Host;
using XenPvUsb.Usb;
using XenPvUsb.Xen;
using XenPvUsb.XenStore;

namespace XenPvUsb.Toolstack;

/// <summary>Where the persistent assignments and the policy are read from, and the host they apply to.</summary>
public sealed record AssignmentSources
{
    public string AssignmentsPath { get; init; } = AssignmentFile.DefaultPath;

    public string PolicyPath { get; init; } = UsbPolicy.DefaultPath;

    public string SysfsRoot { get; init; } = "/sys";

    public string MountInfoPath { get; init; } = "/proc/self/mountinfo";

    /// <summary>The domain the backend runs in (dom0): never given controllers.</summary>
    public DomId Backend { get; init; } = DomId.Dom0;

    /// <summary>How long an attach waits for the daemon's verdict.</summary>
    public TimeSpan VerdictTimeout { get; init; } = TimeSpan.FromSeconds(10);
}

/// <summary>What happened to one action of a plan.</summary>
public sealed record AppliedAction(AssignmentAction Action, bool Done, string Outcome, int? DevId = null);

/// <summary>
/// Carries out the persistent assignments now: reads the rules and the policy, the running domains and their
/// controllers from xenstore, the host's devices from sysfs and the devices dom0 needs, asks
/// <see cref="AssignmentPlanner"/> what to do, and does it through <see cref="VusbToolstack"/> (controllers made,
/// bus ids written into port nodes, the daemon's verdict awaited). Used by the daemon on every trigger and by
/// <c>xenpvusb apply</c>. Each action fails alone: a domain that dies meanwhile, a refused device or a port taken
/// by a racing toolstack is reported and the rest goes on.
/// </summary>
public sealed class AssignmentApplier
{
    private readonly XenStoreConnection _xs;
    private readonly AssignmentSources _sources;
    private readonly ILogger _logger;
    private string? _lastErrors;

    public AssignmentApplier(XenStoreConnection xs, AssignmentSources sources, ILogger logger)
    {
        _xs = xs;
        _sources = sources;
        _logger = logger;
        Toolstack = new VusbToolstack(xs, sources.SysfsRoot, sources.Backend);
    }

    public VusbToolstack Toolstack { get; }

    /// <summary>The running domains the last <see cref="ApplyAsync"/> saw (none if there were no rules).</summary>
    public IReadOnlyList<RunningDomain> LastDomains { get; private set; } = [];

    /// <summary>The host devices the last <see cref="ApplyAsync"/> saw.</summary>
    public IReadOnlyList<HostDevice> LastDevices { get; private set; } = [];

    /// <summary>The rules as last read (file order), for naming the rule behind an attach.</summary>
    public IReadOnlyList<AssignmentRule> Rules { get; private set; } = [];

    /// <summary>
    /// Plans and carries out. <paramref name="onlyDomain"/>: act for that domain (by name) only, though every
    /// domain's rules still decide who comes first. <paramref name="extraRules"/> come after the file's.
    /// </summary>
    /// <param name="skip">Attaches not to try again now (the daemon refused them before); reported, not carried out.</param>
    public async Task<IReadOnlyList<AppliedAction>> ApplyAsync(string? onlyDomain = null, IReadOnlyList<AssignmentRule>? extraRules = null,
        Func<DomId, string, bool>? skip = null, CancellationToken cancellationToken = default)
    {
        (IReadOnlyList<AssignmentRule> fileRules, IReadOnlyList<string> ruleErrors) = AssignmentFile.Load(_sources.AssignmentsPath);
        (UsbPolicy policy, IReadOnlyList<string> policyErrors) = UsbPolicy.Load(_sources.PolicyPath);
        ReportErrors(ruleErrors, policyErrors);
        IReadOnlyList<AssignmentRule> rules = extraRules is { Count: > 0 } ? [.. fileRules, .. extraRules] : fileRules;
        Rules = rules;
        IReadOnlyList<HostDevice> devices = HostDevices(_sources.SysfsRoot);
        LastDevices = devices;
        if (rules.Count == 0)
        {
            LastDomains = [];
            return [];
        }
        IReadOnlyList<RunningDomain> domains = await RunningDomainsAsync(cancellationToken).ConfigureAwait(false);
        LastDomains = domains;
        IReadOnlyDictionary<string, string> dom0Needed = Dom0Devices.Detect(_sources.SysfsRoot, _sources.MountInfoPath);
        IReadOnlyList<AssignmentAction> plan = AssignmentPlanner.Plan(rules, domains, devices, dom0Needed.Keys.ToHashSet(StringComparer.Ordinal), policy);

        var results = new List<AppliedAction>();
        var made = new Dictionary<DomId, int>();
        var verdicts = new List<Task<AppliedAction>>();
        foreach (AssignmentAction action in plan)
        {
            RunningDomain? domain = DomainOf(domains, action);
            if (onlyDomain is not null && (domain is null || !string.Equals(domain.Name, onlyDomain, StringComparison.Ordinal)))
            {
                continue;
            }
            switch (action)
            {
                case RefusalAction r:
                    string why = dom0Needed.TryGetValue(r.BusId, out string? need) && r.ByPolicy && r.Reason.StartsWith("dom0 needs", StringComparison.Ordinal)
                        ? $"{r.Reason} ({need})" : r.Reason;
                    results.Add(new AppliedAction(r with { Reason = why }, false, why));
                    break;
                case CreateControllerAction c:
                    try
                    {
                        int devId = await Toolstack.CreateControllerAsync(c.Domain, c.Spec.UsbVersion, c.Spec.Ports, cancellationToken: cancellationToken).ConfigureAwait(false);
                        made[c.Domain] = devId;
                        results.Add(new AppliedAction(c, true, $"made controller {devId} (USB {c.Spec.UsbVersion}, {c.Spec.Ports} ports)", devId));
                    }
                    catch (Exception e) when (e is ToolstackException or XenStoreException)
                    {
                        results.Add(new AppliedAction(c, false, $"cannot make a controller: {e.Message}"));
                    }
                    break;
                case AttachAction a:
                    int? target = a.DevId ?? (made.TryGetValue(a.Domain, out int m) ? m : null);
                    if (target is not { } dev)
                    {
                        results.Add(new AppliedAction(a, false, "its controller could not be made"));
                        break;
                    }
                    if (skip?.Invoke(a.Domain, a.BusId) == true)
                    {
                        continue;
                    }
                    try
                    {
                        await Toolstack.AttachAsync(a.Domain, dev, a.Port, a.BusId, cancellationToken).ConfigureAwait(false);
                        verdicts.Add(VerdictAsync(a, dev, cancellationToken));
                    }
                    catch (Exception e) when (e is ToolstackException or XenStoreException)
                    {
                        results.Add(new AppliedAction(a, false, e.Message, dev));
                    }
                    break;
            }
        }
        results.AddRange(await Task.WhenAll(verdicts).ConfigureAwait(false));
        return results;
    }

    /// <summary>The rule (as a line of the file) that claims <paramref name="device"/> for the domain named <paramref name="domain"/>, if any.</summary>
    public string? RuleFor(string? domain, UsbDeviceInfo device)
    {
        if (domain is null)
        {
            return null;
        }
        IReadOnlyList<AssignmentRule> rules = Rules;
        if (rules.Count == 0)
        {
            return null;
        }
        HostDevice host = HostDevice.FromDescriptors(device, ReadDescriptors(_sources.SysfsRoot, device.BusId));
        AssignmentRule? rule = AssignmentFile.FirstMatch(rules, device, host.InterfaceClasses);
        return rule is not null && string.Equals(rule.Domain, domain, StringComparison.Ordinal) ? Describe(rule) : null;
    }

    /// <summary>A rule for messages and the RULE field: its line in the file and its text.</summary>
    public static string Describe(AssignmentRule rule) =>
        rule.Line > 0 ? $"line {rule.Line}: {rule.Format()}" : rule.Format();

    private async Task<AppliedAction> VerdictAsync(AttachAction a, int devId, CancellationToken cancellationToken)
    {
        PortStatus? verdict = await Toolstack.WaitForVerdictAsync(a.Domain, devId, a.Port, a.BusId, _sources.VerdictTimeout, cancellationToken).ConfigureAwait(false);
        return verdict switch
        {
            null => new AppliedAction(a, true, $"{a.BusId} on controller {devId} port {a.Port}; no verdict from xenpvusbd within {_sources.VerdictTimeout.TotalSeconds:0} s", devId),
            { Verdict: PortStatus.Refused } v => new AppliedAction(a, false, $"xenpvusbd refused {a.BusId} on controller {devId} port {a.Port}: {v.Reason}", devId),
            { Verdict: PortStatus.Waiting } => new AppliedAction(a, true, $"{a.BusId} assigned to controller {devId} port {a.Port}; it is not plugged in", devId),
            _ => new AppliedAction(a, true, $"attached {a.BusId} to controller {devId} port {a.Port}", devId),
        };
    }

    private static RunningDomain? DomainOf(IReadOnlyList<RunningDomain> domains, AssignmentAction action)
    {
        DomId id = action switch
        {
            RefusalAction r => r.Domain,
            CreateControllerAction c => c.Domain,
            AttachAction a => a.Domain,
            _ => default,
        };
        return domains.FirstOrDefault(d => d.Id == id);
    }

    /// <summary>
    /// The guests xenstored knows, with their names and their served controllers (backend state below Closing).
    /// A domain without a name yet (the toolstack still making it) is left for the trigger its name brings.
    /// </summary>
    public async Task<IReadOnlyList<RunningDomain>> RunningDomainsAsync(CancellationToken cancellationToken = default)
    {
        var domains = new List<RunningDomain>();
        foreach (string d in await _xs.DirectoryAsync("/local/domain", cancellationToken: cancellationToken).ConfigureAwait(false))
        {
            // 0x7FF0 and up are DOMID_FIRST_RESERVED and beyond (DOMID_SELF, DOMID_IO, ...), never guests.
            if (!ushort.TryParse(d, NumberStyles.None, CultureInfo.InvariantCulture, out ushort id) || id == _sources.Backend.Value || id >= 0x7FF0)
            {
                continue;
            }
            var domId = new DomId(id);
            try
            {
                if (!await _xs.IsDomainIntroducedAsync(domId, cancellationToken).ConfigureAwait(false))
                {
                    continue;
                }
                string? name = await _xs.ReadAsync($"/local/domain/{id}/name", cancellationToken: cancellationToken).ConfigureAwait(false);
                if (string.IsNullOrEmpty(name))
                {
                    continue;
                }
                var controllers = new List<PlannedController>();
                foreach (VusbControllerInfo c in await Toolstack.ListAsync(domId, cancellationToken).ConfigureAwait(false))
                {
                    if (c.BackendState is >= 1 and <= 4 && c.UsbVersion is 1 or 2 && c.NumPorts > 0)
                    {
                        controllers.Add(new PlannedController(c.DevId, c.UsbVersion, c.Ports));
                    }
                }
                domains.Add(new RunningDomain(name, domId, controllers));
            }
            catch (XenStoreException)
            {
                // Gone while being read.
            }
        }
        return domains;
    }

    /// <summary>The host's USB devices with their interfaces (from sysfs's descriptors).</summary>
    public static IReadOnlyList<HostDevice> HostDevices(string sysfsRoot)
    {
        var list = new List<HostDevice>();
        foreach (UsbDeviceInfo info in UsbSysfs.Enumerate(sysfsRoot))
        {
            if (!info.IsRootHub)
            {
                list.Add(HostDevice.FromDescriptors(info, ReadDescriptors(sysfsRoot, info.BusId)));
            }
        }
        return list;
    }

    private static byte[] ReadDescriptors(string sysfsRoot, string busId)
    {
        try
        {
            return UsbSysfs.ReadDescriptors(sysfsRoot, busId);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException)
        {
            return [];
        }
    }

    // Said once per content: a file that stays broken is not logged on every trigger.
    private void ReportErrors(IReadOnlyList<string> ruleErrors, IReadOnlyList<string> policyErrors)
    {
        string all = string.Join('\n', ruleErrors.Select(e => $"{_sources.AssignmentsPath}: {e}").Concat(policyErrors.Select(e => $"{_sources.PolicyPath}: {e}")));
        if (all == _lastErrors)
        {
            return;
        }
        _lastErrors = all;
        foreach (string e in ruleErrors)
        {
            _logger.AssignmentFileError(_sources.AssignmentsPath, e);
        }
        foreach (string e in policyErrors)
        {
            _logger.AssignmentFileError(_sources.PolicyPath, e);
        }
    }
}

internal static partial class AssignmentLog
{
    [LoggerMessage(EventId = 260, Level = LogLevel.Warning, Message = "{Path}: {Error}")]
    public static partial void AssignmentFileError(this ILogger logger, string path, string error);
}
