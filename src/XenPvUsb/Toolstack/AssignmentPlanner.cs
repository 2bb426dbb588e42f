using XenPvUsb.Usb;
using XenPvUsb.Xen;

namespace XenPvUsb.Toolstack;

/// <summary>
/// A host device as the planner sees it: what sysfs says, the classes of its interfaces, and for the policy their
/// class, subclass and protocol (null: only the classes are known).
/// </summary>
public sealed record HostDevice(UsbDeviceInfo Info, IReadOnlyCollection<byte> InterfaceClasses, IReadOnlyCollection<UsbInterfaceClass>? Interfaces = null)
{
    /// <summary>Reads the device's interfaces from its descriptors (sysfs's descriptors file).</summary>
    public static HostDevice FromDescriptors(UsbDeviceInfo info, ReadOnlySpan<byte> descriptors)
    {
        IReadOnlyCollection<UsbInterfaceClass> interfaces = UsbPolicy.Interfaces(descriptors);
        return new HostDevice(info, interfaces.Select(i => i.Class).ToHashSet(), interfaces);
    }

    public IReadOnlyCollection<UsbInterfaceClass> PolicyInterfaces => Interfaces ?? InterfaceClasses.Select(c => new UsbInterfaceClass(c, 0, 0)).ToList();
}

/// <summary>One controller of a running domain: its id, USB version, and the bus id on each port (null: free).</summary>
public sealed record PlannedController(int DevId, int UsbVersion, IReadOnlyList<string?> Ports);

/// <summary>A running guest: its name, domain id and controllers.</summary>
public sealed record RunningDomain(string Name, DomId Id, IReadOnlyList<PlannedController> Controllers);

/// <summary>What applying the rules takes.</summary>
public abstract record AssignmentAction(AssignmentRule Rule);

/// <summary>The domain has no controller and the rule asks for one.</summary>
public sealed record CreateControllerAction(AssignmentRule Rule, DomId Domain, ControllerSpec Spec) : AssignmentAction(Rule);

/// <summary>Put <see cref="BusId"/> on a port of a controller. <see cref="DevId"/> is null for the controller <see cref="CreateControllerAction"/> makes.</summary>
public sealed record AttachAction(AssignmentRule Rule, DomId Domain, int? DevId, int Port, string BusId) : AssignmentAction(Rule);

/// <summary>
/// A device the rule matches that does not go to the domain, and why (for the audit trail). <see cref="ByPolicy"/>:
/// a policy decision (hub, the policy file, a device dom0 needs), not a conflict or a lack of ports.
/// </summary>
public sealed record RefusalAction(AssignmentRule Rule, DomId Domain, string BusId, string Reason, bool ByPolicy = false) : AssignmentAction(Rule);

/// <summary>
/// Works out what the persistent assignments ask for, now: for each running domain, the devices present that
/// its rules match and that no one has yet, the port each goes on, and a controller where the rule asks for
/// one and the domain has none. Rules apply in file order: a device two domains' rules match goes to the one
/// whose rule comes first (the other gets a refusal saying so). Hubs never go anywhere; devices dom0 needs (its
/// console keyboard and mouse, its boot disk: <paramref name="dom0Needed"/>) go only to rules that name them
/// (serial, port path or a whole vendor:product) or say force; the USB policy (<paramref name="policy"/>) refuses
/// what it denies, forced or not. A pure function of its inputs: the daemon calls
/// it when a domain appears, a device is plugged in or the file changes, and carries the actions out.
/// </summary>
public static class AssignmentPlanner
{
    public static IReadOnlyList<AssignmentAction> Plan(IReadOnlyList<AssignmentRule> rules, IReadOnlyList<RunningDomain> domains,
        IReadOnlyList<HostDevice> devices, IReadOnlySet<string> dom0Needed, UsbPolicy? policy = null)
    {
        ArgumentNullException.ThrowIfNull(rules);
        ArgumentNullException.ThrowIfNull(domains);
        ArgumentNullException.ThrowIfNull(devices);
        ArgumentNullException.ThrowIfNull(dom0Needed);
        var actions = new List<AssignmentAction>();
        var taken = new HashSet<string>(StringComparer.Ordinal);
        foreach (RunningDomain d in domains)
        {
            foreach (PlannedController c in d.Controllers)
            {
                foreach (string? busId in c.Ports)
                {
                    if (!string.IsNullOrEmpty(busId))
                    {
                        taken.Add(busId);
                    }
                }
            }
        }
        // Free ports as the plan fills them: (domain, devId or -1 for the controller to be made) -> ports.
        var free = new Dictionary<(DomId, int), List<int>>();
        var created = new Dictionary<DomId, ControllerSpec>();
        var claimedBy = new Dictionary<string, AssignmentRule>(StringComparer.Ordinal);

        foreach (AssignmentRule rule in rules)
        {
            RunningDomain? domain = domains.FirstOrDefault(d => string.Equals(d.Name, rule.Domain, StringComparison.Ordinal));
            foreach (HostDevice dev in devices)
            {
                UsbDeviceInfo info = dev.Info;
                if (info.IsRootHub || !rule.Match.Matches(info, dev.InterfaceClasses))
                {
                    continue;
                }
                if (claimedBy.TryGetValue(info.BusId, out AssignmentRule? first))
                {
                    if (domain is not null && !string.Equals(first.Domain, rule.Domain, StringComparison.Ordinal))
                    {
                        actions.Add(new RefusalAction(rule, domain.Id, info.BusId,
                            $"also matched by line {first.Line} for {first.Domain}, which comes first"));
                    }
                    continue;
                }
                claimedBy[info.BusId] = rule;
                if (domain is null || taken.Contains(info.BusId))
                {
                    continue; // the domain is not running, or the device is someone's already (maybe this domain's)
                }
                if (info.IsHub)
                {
                    actions.Add(new RefusalAction(rule, domain.Id, info.BusId, "a hub cannot be passed through", ByPolicy: true));
                    continue;
                }
                if (policy?.Evaluate(info, dev.PolicyInterfaces) is { Allowed: false } verdict)
                {
                    actions.Add(new RefusalAction(rule, domain.Id, info.BusId, verdict.Reason, ByPolicy: true));
                    continue;
                }
                if (dom0Needed.Contains(info.BusId) && rule.Match.IsBroad && !rule.Force)
                {
                    actions.Add(new RefusalAction(rule, domain.Id, info.BusId, "dom0 needs it (console input or boot disk); name it or add force", ByPolicy: true));
                    continue;
                }
                if (PickPort(rule, domain, info, free, created, actions) is not { } target)
                {
                    actions.Add(new RefusalAction(rule, domain.Id, info.BusId,
                        rule.Port is { } p ? $"port {p} is not free on any controller of {domain.Name}" : $"{domain.Name} has no free port (and the rule asks for no controller)"));
                    continue;
                }
                taken.Add(info.BusId);
                actions.Add(new AttachAction(rule, domain.Id, target.DevId, target.Port, info.BusId));
            }
        }
        return actions;
    }

    private static (int? DevId, int Port)? PickPort(AssignmentRule rule, RunningDomain domain, UsbDeviceInfo info,
        Dictionary<(DomId, int), List<int>> free, Dictionary<DomId, ControllerSpec> created, List<AssignmentAction> actions)
    {
        foreach (PlannedController c in domain.Controllers)
        {
            // A USB 1.1 controller serves low- and full-speed devices only.
            if (c.UsbVersion < 2 && info.Speed is not (UsbSpeed.Low or UsbSpeed.Full))
            {
                continue;
            }
            List<int> ports = FreePorts(free, domain.Id, c.DevId, c.Ports.Count, p => string.IsNullOrEmpty(c.Ports[p - 1]));
            if (Take(ports, rule.Port) is { } port)
            {
                return (c.DevId, port);
            }
        }
        if (domain.Controllers.Count > 0)
        {
            return null;
        }
        // The controller this plan makes: the first rule that asks for one decides what it is.
        bool making = created.TryGetValue(domain.Id, out ControllerSpec spec);
        if (!making)
        {
            if (rule.Controller is not { } asked)
            {
                return null;
            }
            spec = asked;
        }
        if (spec.UsbVersion < 2 && info.Speed is not (UsbSpeed.Low or UsbSpeed.Full))
        {
            return null;
        }
        if (!making)
        {
            created[domain.Id] = spec;
            actions.Add(new CreateControllerAction(rule, domain.Id, spec));
        }
        List<int> newPorts = FreePorts(free, domain.Id, -1, spec.Ports, _ => true);
        return Take(newPorts, rule.Port) is { } np ? (null, np) : null;
    }

    private static List<int> FreePorts(Dictionary<(DomId, int), List<int>> free, DomId domain, int devId, int count, Func<int, bool> isFree)
    {
        if (!free.TryGetValue((domain, devId), out List<int>? ports))
        {
            ports = Enumerable.Range(1, count).Where(isFree).ToList();
            free[(domain, devId)] = ports;
        }
        return ports;
    }

    private static int? Take(List<int> ports, int? wanted)
    {
        int index = wanted is { } w ? ports.IndexOf(w) : (ports.Count > 0 ? 0 : -1);
        if (index < 0)
        {
            return null;
        }
        int port = ports[index];
        ports.RemoveAt(index);
        return port;
    }
}
