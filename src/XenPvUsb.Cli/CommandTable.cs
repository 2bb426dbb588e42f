using System.CommandLine;
using System.Globalization;
using XenPvUsb.Backend;
using XenPvUsb.Toolstack;
using XenPvUsb.Usb;
using XenPvUsb.Xen;
using XenPvUsb.XenStore;

namespace XenPvUsb.Cli;

/// <summary>
/// The verbs, table-driven like xl_cmdtable.c: the xm-era names (usb-hc-create, usb-attach, ...)
/// and the xl names (usbctrl-attach, usbdev-attach hostbus= hostaddr=, ...). Every verb is a thin
/// call into <see cref="VusbToolstack"/>; errors print one line and exit 1.
/// </summary>
internal static partial class CommandTable
{
    // How long an attach waits for the daemon's verdict (port-status/N); a new controller under TCG takes seconds.
    private static readonly TimeSpan s_verdictTimeout = TimeSpan.FromSeconds(10);

    public static RootCommand Build()
    {
        var root = new RootCommand("xenpvusb: give Xen guests USB devices through PVUSB (backend: xenpvusbd)");
        foreach (Command c in Commands().Concat(AssignmentCommands()).Concat(ApplyCommands()))
        {
            root.Subcommands.Add(c);
        }
        return root;
    }

    private static IEnumerable<Command> Commands()
    {
        var domain = new Argument<string>("Domain") { Description = "guest name or domain id" };
        var usbVer = new Argument<string>("UsbVer") { Description = "1 (USB 1.1) or 2 (USB 2.0)" };
        var ports = new Argument<string>("Ports") { Description = "number of ports, 1 to 31" };
        var devId = new Argument<string>("DevId") { Description = "controller id (from usb-list)" };
        var port = new Argument<string>("Port") { Description = "port number, from 1" };
        var busId = new Argument<string>("BusId") { Description = "host device bus id, e.g. 1-2 or 3-1.4 (see usb-list-assignable-devices)" };
        var keyValues = new Argument<string[]>("options") { Description = "key=value options", Arity = ArgumentArity.ZeroOrMore };

        var grantMode = new Option<string>("--grant-mode")
        {
            Description = "data path of this controller: copy (grant copy) or map (bulk/interrupt pages mapped in place); default: the daemon's",
        };
        var noMerge = new Option<bool>("--no-merge")
        {
            Description = "give every bulk request its own transfer to the device (default: bulk requests queued together are merged, IN and OUT)",
        };
        Command hcCreate = Verb("usb-hc-create", "Create a virtual USB host controller for a domain", [domain, usbVer, ports], async (r, ctx, ct) =>
        {
            DomId d = await ctx.Toolstack.ResolveDomainAsync(r.GetValue(domain)!, ct);
            GrantMode? mode = ParseGrantMode(r.GetValue(grantMode));
            int id = await ctx.Toolstack.CreateControllerAsync(d, Int(r.GetValue(usbVer), "UsbVer"), Int(r.GetValue(ports), "Ports"), grantMode: mode,
                mergeBulkIn: !r.GetValue(noMerge), cancellationToken: ct);
            Console.WriteLine($"created controller {id} for domain {d}");
        });
        hcCreate.Options.Add(grantMode);
        hcCreate.Options.Add(noMerge);
        yield return hcCreate;
        yield return Verb("usb-hc-destroy", "Destroy a virtual USB host controller", [domain, devId], async (r, ctx, ct) =>
        {
            DomId d = await ctx.Toolstack.ResolveDomainAsync(r.GetValue(domain)!, ct);
            await Destroy(ctx, d, Int(r.GetValue(devId), "DevId"), ct);
        });
        yield return Verb("usb-attach", "Attach a host USB device to a port of a virtual controller", [domain, devId, port, busId], async (r, ctx, ct) =>
        {
            DomId d = await ctx.Toolstack.ResolveDomainAsync(r.GetValue(domain)!, ct);
            (int c, int p, string b) = (Int(r.GetValue(devId), "DevId"), Int(r.GetValue(port), "Port"), r.GetValue(busId)!);
            ctx.Toolstack.Policy = LoadPolicy();
            await ctx.Toolstack.AttachAsync(d, c, p, b, ct);
            await ReportVerdictAsync(ctx, d, c, p, b, ct);
        });
        yield return Verb("usb-detach", "Detach the device on a port of a virtual controller", [domain, devId, port], async (r, ctx, ct) =>
        {
            DomId d = await ctx.Toolstack.ResolveDomainAsync(r.GetValue(domain)!, ct);
            await ctx.Toolstack.DetachAsync(d, Int(r.GetValue(devId), "DevId"), Int(r.GetValue(port), "Port"), ct);
        });
        var json = new Option<bool>("--json") { Description = "print JSON" };
        Command list = Verb("usb-list", "List a domain's virtual USB controllers and their devices", [domain], async (r, ctx, ct) =>
        {
            DomId d = await ctx.Toolstack.ResolveDomainAsync(r.GetValue(domain)!, ct);
            if (r.GetValue(json))
            {
                Console.WriteLine(ListJson(d, await ctx.Toolstack.ListAsync(d, ct), UsbSysfsOrEmpty()));
                return;
            }
            await PrintList(ctx, d, ct);
        });
        list.Options.Add(json);
        yield return list;
        Command assignable = Verb("usb-list-assignable-devices", "List host USB devices that can be given to a guest", [], async (r, ctx, ct) =>
        {
            // Which persistent assignment claims each device (if the file has rules), and what the policy says.
            IReadOnlyList<AssignmentRule> rules = AssignmentFile.Load(AssignmentsPath).Rules;
            UsbPolicy policy = LoadPolicy();
            var rows = new List<AssignableRow>();
            foreach (UsbDeviceInfo dev in await ctx.Toolstack.ListAssignableAsync(ct))
            {
                HostDevice host = HostDevice.FromDescriptors(dev, ReadDescriptorsOrEmpty(dev.BusId));
                rows.Add(new AssignableRow(dev, rules.Count > 0 ? AssignmentFile.FirstMatch(rules, dev, host.InterfaceClasses) : null,
                    policy.Evaluate(dev, host.PolicyInterfaces)));
            }
            if (r.GetValue(json))
            {
                Console.WriteLine(AssignableJson(rows));
                return;
            }
            foreach (AssignableRow row in rows)
            {
                UsbDeviceInfo dev = row.Device;
                string claim = rules.Count == 0 ? ""
                    : row.Rule is { } rule ? $"  [assigned to {rule.Domain}: {rule.Match}, line {rule.Line}]" : "  [no assignment]";
                string verdict = row.Policy.Allowed ? "" : $"  [{row.Policy.Reason}]";
                Console.WriteLine($"{dev.BusId,-10} Bus {dev.BusNum:D3} Device {dev.DevNum:D3}: ID {dev.VendorId:x4}:{dev.ProductId:x4} {Describe(dev)}{claim}{verdict}");
            }
        });
        assignable.Options.Add(json);
        yield return assignable;
        yield return Verb("usbctrl-attach", "Create a virtual USB controller: usbctrl-attach <Domain> [type=pv] [version=2] [ports=8] [grant-mode=copy|map]", [domain, keyValues], async (r, ctx, ct) =>
        {
            Dictionary<string, string> kv = KeyValues(r.GetValue(keyValues), "type", "version", "ports", "grant-mode");
            if (kv.TryGetValue("type", out string? type) && type is not ("pv" or "auto"))
            {
                throw new ToolstackException($"type={type} is not served by xenpvusbd; use type=pv (or xl for qusb/devicemodel)");
            }
            DomId d = await ctx.Toolstack.ResolveDomainAsync(r.GetValue(domain)!, ct);
            int id = await ctx.Toolstack.CreateControllerAsync(d, kv.TryGetValue("version", out string? v) ? Int(v, "version") : 2,
                kv.TryGetValue("ports", out string? p) ? Int(p, "ports") : 8, grantMode: ParseGrantMode(kv.GetValueOrDefault("grant-mode")), cancellationToken: ct);
            Console.WriteLine($"created controller {id} for domain {d}");
        });
        yield return Verb("usbctrl-detach", "Destroy a virtual USB controller: usbctrl-detach <Domain> <DevId>", [domain, devId], async (r, ctx, ct) =>
        {
            DomId d = await ctx.Toolstack.ResolveDomainAsync(r.GetValue(domain)!, ct);
            await Destroy(ctx, d, Int(r.GetValue(devId), "DevId"), ct);
        });
        yield return Verb("usbdev-attach", "Attach a host device: usbdev-attach <Domain> hostbus=<bus> hostaddr=<addr> [controller=<DevId> [port=<n>]]", [domain, keyValues], async (r, ctx, ct) =>
        {
            Dictionary<string, string> kv = KeyValues(r.GetValue(keyValues), "hostbus", "hostaddr", "controller", "port", "type");
            if (!kv.TryGetValue("hostbus", out string? bus) || !kv.TryGetValue("hostaddr", out string? addr))
            {
                throw new ToolstackException("usbdev-attach needs hostbus= and hostaddr=");
            }
            if (kv.TryGetValue("type", out string? type) && type != "hostdev")
            {
                throw new ToolstackException($"type={type}: only hostdev devices exist");
            }
            DomId d = await ctx.Toolstack.ResolveDomainAsync(r.GetValue(domain)!, ct);
            ctx.Toolstack.Policy = LoadPolicy();
            (int c, int p, string b) = await ctx.Toolstack.AttachByAddressAsync(d, Int(bus, "hostbus"), Int(addr, "hostaddr"),
                kv.TryGetValue("controller", out string? cs) ? Int(cs, "controller") : null,
                kv.TryGetValue("port", out string? ps) ? Int(ps, "port") : null, ct);
            await ReportVerdictAsync(ctx, d, c, p, b, ct);
            Console.WriteLine($"attached {b} to controller {c} port {p}");
        });
        yield return Verb("usbdev-detach", "Detach a device: usbdev-detach <Domain> <controller> <port>", [domain, devId, port], async (r, ctx, ct) =>
        {
            DomId d = await ctx.Toolstack.ResolveDomainAsync(r.GetValue(domain)!, ct);
            await ctx.Toolstack.DetachAsync(d, Int(StripKey(r.GetValue(devId)!, "controller"), "controller"), Int(StripKey(r.GetValue(port)!, "port"), "port"), ct);
        });
    }

    /// <summary>The persistent assignment file the verbs edit: XENPVUSB_ASSIGNMENTS, or /etc/xenpvusb/assignments.conf.</summary>
    private static string AssignmentsPath =>
        Environment.GetEnvironmentVariable("XENPVUSB_ASSIGNMENTS") is { Length: > 0 } p ? p : AssignmentFile.DefaultPath;

    private static IEnumerable<Command> AssignmentCommands()
    {
        var domain = new Argument<string>("Domain") { Description = "guest name (rules follow the name across reboots)" };
        var match = new Argument<string[]>("match")
        {
            Description = "id=vvvv:pppp (or vvvv:*), serial=S, path=B-P.P, class=cc, port=N, controller=usbver:ports, force",
            Arity = ArgumentArity.ZeroOrMore,
        };
        var json = new Option<bool>("--json") { Description = "print JSON" };

        yield return LocalVerb("assign", "Assign matching host devices to a domain, now and whenever it runs or they are plugged in", [domain, match], [], r =>
        {
            AssignmentRule rule = ParseRuleArgs(r.GetValue(domain)!, r.GetValue(match));
            if (!AssignmentFile.Add(AssignmentsPath, rule))
            {
                Console.WriteLine($"already assigned: {rule.Format()}");
                return;
            }
            Console.WriteLine($"assigned: {rule.Format()}");
        });
        yield return LocalVerb("unassign", "Remove a domain's assignments (those with exactly this match, or all of them)", [domain, match], [], r =>
        {
            string name = r.GetValue(domain)!;
            string[] words = r.GetValue(match) ?? [];
            DeviceMatch? m = words.Length == 0 ? null : ParseRuleArgs(name, words).Match;
            IReadOnlyList<AssignmentRule> removed = AssignmentFile.Remove(AssignmentsPath, name, m);
            if (removed.Count == 0)
            {
                throw new ToolstackException($"no assignment of {name}{(m is null ? "" : $" with {m}")} in {AssignmentsPath}");
            }
            foreach (AssignmentRule rule in removed)
            {
                Console.WriteLine($"unassigned: {rule.Format()}");
            }
        });
        yield return LocalVerb("assignments", "List the persistent assignments, in the order they apply", [], [json], r =>
        {
            (IReadOnlyList<AssignmentRule> rules, IReadOnlyList<string> errors) = AssignmentFile.Load(AssignmentsPath);
            foreach (string e in errors)
            {
                Console.Error.WriteLine($"xenpvusb: warning: {AssignmentsPath}: {e} (ignored)");
            }
            if (r.GetValue(json))
            {
                Console.WriteLine(AssignmentsJson(rules));
                return;
            }
            Console.WriteLine($"{"Domain",-16} {"Match",-40} {"Port",-4} {"Controller",-10} Force");
            foreach (AssignmentRule rule in rules)
            {
                Console.WriteLine($"{rule.Domain,-16} {rule.Match,-40} {(rule.Port?.ToString(CultureInfo.InvariantCulture) ?? "any"),-4} {(rule.Controller?.ToString() ?? "-"),-10} {(rule.Force ? "yes" : "no")}");
            }
        });
    }

    private static AssignmentRule ParseRuleArgs(string domain, string[]? words)
    {
        try
        {
            return AssignmentFile.ParseRule([domain, .. words ?? []]);
        }
        catch (FormatException e)
        {
            throw new ToolstackException(e.Message);
        }
    }

    private static string AssignmentsJson(IReadOnlyList<AssignmentRule> rules) => Json(w =>
        {
            w.WriteStartArray();
            foreach (AssignmentRule rule in rules)
            {
                w.WriteStartObject();
                w.WriteString("domain", rule.Domain);
                DeviceMatch m = rule.Match;
                if (m.VendorId is { } v)
                {
                    w.WriteString("vendor", v.ToString("x4", CultureInfo.InvariantCulture));
                }
                if (m.ProductId is { } p)
                {
                    w.WriteString("product", p.ToString("x4", CultureInfo.InvariantCulture));
                }
                if (m.Serial is not null)
                {
                    w.WriteString("serial", m.Serial);
                }
                if (m.Path is not null)
                {
                    w.WriteString("path", m.Path);
                }
                if (m.InterfaceClass is { } c)
                {
                    w.WriteString("class", c.ToString("x2", CultureInfo.InvariantCulture));
                }
                if (rule.Port is { } port)
                {
                    w.WriteNumber("port", port);
                }
                if (rule.Controller is { } ctl)
                {
                    w.WriteNumber("usbVersion", ctl.UsbVersion);
                    w.WriteNumber("ports", ctl.Ports);
                }
                w.WriteBoolean("force", rule.Force);
                w.WriteNumber("line", rule.Line);
                w.WriteEndObject();
            }
            w.WriteEndArray();
        });

    /// <summary>A verb that works on local files only (no xenstore): errors print one line and exit 1.</summary>
    private static Command LocalVerb(string name, string description, Argument[] arguments, Option[] options, Action<ParseResult> action)
    {
        var command = new Command(name, description);
        foreach (Argument a in arguments)
        {
            command.Arguments.Add(a);
        }
        foreach (Option o in options)
        {
            command.Options.Add(o);
        }
        command.SetAction(result =>
        {
            try
            {
                action(result);
                return 0;
            }
            catch (Exception e) when (e is ToolstackException or IOException or UnauthorizedAccessException)
            {
                Console.Error.WriteLine($"xenpvusb {name}: {e.Message}");
                return 1;
            }
        });
        return command;
    }

    /// <summary>
    /// The daemon's verdict on an assignment, for the person who asked: a refusal is an error (the daemon
    /// has emptied the port again); no answer at all is a warning (the assignment stays and is served
    /// once a daemon runs).
    /// </summary>
    private static async Task ReportVerdictAsync(CliContext ctx, DomId domain, int devId, int port, string busId, CancellationToken ct)
    {
        PortStatus? verdict = await ctx.Toolstack.WaitForVerdictAsync(domain, devId, port, busId, s_verdictTimeout, ct);
        switch (verdict)
        {
            case null:
                Console.Error.WriteLine($"xenpvusb: warning: no answer from xenpvusbd within {s_verdictTimeout.TotalSeconds:0} s (is it running?); port {port} of controller {devId} stays assigned {busId}");
                break;
            case { Verdict: PortStatus.Refused } v:
                throw new ToolstackException($"xenpvusbd refused {busId} on port {port} of controller {devId}: {v.Reason}");
            case { Verdict: PortStatus.Waiting }:
                Console.WriteLine($"port {port}: {busId} is not plugged in; xenpvusbd attaches it when it is");
                break;
        }
    }

    private static Command Verb(string name, string description, Argument[] arguments, Func<ParseResult, CliContext, CancellationToken, Task> action)
    {
        var command = new Command(name, description);
        foreach (Argument a in arguments)
        {
            command.Arguments.Add(a);
        }
        command.SetAction(async (result, ct) =>
        {
            try
            {
                await using CliContext ctx = await CliContext.OpenAsync(ct);
                await action(result, ctx, ct);
                return 0;
            }
            catch (Exception e) when (e is ToolstackException or XenStoreException or XenStoreConnectionClosedException or UsbDeviceException)
            {
                Console.Error.WriteLine($"xenpvusb {name}: {e.Message}");
                return 1;
            }
        });
        return command;
    }

    private static GrantMode? ParseGrantMode(string? text)
    {
        if (text is null)
        {
            return null;
        }
        return GrantModes.TryParse(text, out GrantMode mode) ? mode : throw new ToolstackException($"grant mode must be copy or map, not '{text}'");
    }

    private static async Task Destroy(CliContext ctx, DomId d, int id, CancellationToken ct)
    {
        if (!await ctx.Toolstack.DestroyControllerAsync(d, id, ct))
        {
            Console.Error.WriteLine($"warning: the backend did not close controller {id} within {VusbToolstack.BackendTimeout.TotalSeconds:0} s; its nodes were removed anyway");
        }
    }

    private static async Task PrintList(CliContext ctx, DomId d, CancellationToken ct)
    {
        IReadOnlyList<UsbDeviceInfo> host = UsbSysfsOrEmpty();
        foreach (VusbControllerInfo c in await ctx.Toolstack.ListAsync(d, ct))
        {
            Console.WriteLine($"{"Devid",-6} {"Type",-12} {"BE",-3} {"state",-5} {"usb-ver",-7} {"ports",-5}");
            Console.WriteLine($"{c.DevId,-6} {c.Type,-12} {c.BackendDomain,-3} {c.FrontendState,-5} {c.UsbVersion,-7} {c.NumPorts,-5}");
            for (int p = 1; p <= c.NumPorts; p++)
            {
                string? b = c.Ports[p - 1];
                if (string.IsNullOrEmpty(b))
                {
                    Console.WriteLine($"  Port {p}:");
                    continue;
                }
                UsbDeviceInfo? dev = host.FirstOrDefault(h => h.BusId == b);
                Console.WriteLine(dev is null
                    ? $"  Port {p}: {b} (not plugged in)"
                    : $"  Port {p}: Bus {dev.BusNum:x3} Device {dev.DevNum:x3}  {b}  ID {dev.VendorId:x4}:{dev.ProductId:x4} {Describe(dev)}");
            }
        }
    }

    private static IReadOnlyList<UsbDeviceInfo> UsbSysfsOrEmpty()
    {
        try
        {
            return XenPvUsb.Host.UsbSysfs.Enumerate(CliContext.SysfsRoot);
        }
        catch (IOException)
        {
            return [];
        }
    }

    private static byte[] ReadDescriptorsOrEmpty(string busId)
    {
        try
        {
            return XenPvUsb.Host.UsbSysfs.ReadDescriptors(CliContext.SysfsRoot, busId);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return [];
        }
    }

    /// <summary>
    /// The device's name as lsusb prints it: vendor and product from the usb.ids database (XENPVUSB_USB_IDS names
    /// another copy), else the device's own manufacturer and product strings.
    /// </summary>
    private static string Describe(UsbDeviceInfo d)
    {
        XenPvUsb.Host.UsbIds ids = UsbIdsDatabase();
        string? vendor = ids.VendorName(d.VendorId) ?? d.Manufacturer;
        string? product = ids.ProductName(d.VendorId, d.ProductId) ?? d.Product;
        return string.Join(' ', new[] { vendor, product }.Where(s => !string.IsNullOrWhiteSpace(s)).Select(s => s!.Trim()));
    }

    private static (string Path, XenPvUsb.Host.UsbIds Ids)? s_usbIds;

    private static XenPvUsb.Host.UsbIds UsbIdsDatabase()
    {
        if (Environment.GetEnvironmentVariable("XENPVUSB_USB_IDS") is not { Length: > 0 } path)
        {
            return XenPvUsb.Host.UsbIds.System;
        }
        if (s_usbIds is not { } cached || cached.Path != path)
        {
            s_usbIds = cached = (path, XenPvUsb.Host.UsbIds.Load([path]));
        }
        return cached.Ids;
    }

    private static Dictionary<string, string> KeyValues(string[]? items, params string[] allowed)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string item in items ?? [])
        {
            int eq = item.IndexOf('=', StringComparison.Ordinal);
            string key = eq > 0 ? item[..eq] : item;
            if (eq <= 0 || !allowed.Contains(key))
            {
                throw new ToolstackException($"unknown option '{item}' (expected {string.Join(", ", allowed.Select(a => a + "="))})");
            }
            result[key] = item[(eq + 1)..];
        }
        return result;
    }

    private static string StripKey(string value, string key) => value.StartsWith(key + "=", StringComparison.Ordinal) ? value[(key.Length + 1)..] : value;

    /// <summary>Numbers as xl takes them (strtoul base 0: decimal, 0x hex, leading-zero octal).</summary>
    private static int Int(string? text, string what)
    {
        string s = text ?? "";
        int value;
        bool ok = s.StartsWith("0x", StringComparison.OrdinalIgnoreCase)
            ? int.TryParse(s.AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out value)
            : s.Length > 1 && s[0] == '0'
                ? TryOctal(s, out value)
                : int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out value);
        if (!ok)
        {
            throw new ToolstackException($"{what} must be a number, not '{s}'");
        }
        return value;
    }

    private static bool TryOctal(string s, out int value)
    {
        value = 0;
        foreach (char c in s)
        {
            if (c is < '0' or > '7' || value > int.MaxValue / 8)
            {
                return false;
            }
            value = (value * 8) + (c - '0');
        }
        return true;
    }
}
