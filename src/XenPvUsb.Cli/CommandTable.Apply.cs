using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using System.Xml;
using Microsoft.Extensions.Logging.Abstractions;
using XenPvUsb.Toolstack;
using XenPvUsb.Usb;
using XenPvUsb.Xen;

namespace XenPvUsb.Cli;

/// <summary>apply and libvirt-hook (persistent assignments carried out now), and the JSON forms of the lists.</summary>
internal static partial class CommandTable
{
    /// <summary>The namespace of xenpvusb's elements in a libvirt domain's &lt;metadata&gt;.</summary>
    public const string LibvirtNamespace = "https://xenpvusb.org/libvirt/1";

    /// <summary>The USB policy file: XENPVUSB_POLICY, or /etc/xenpvusb/usb-policy.conf.</summary>
    private static string PolicyPath =>
        Environment.GetEnvironmentVariable("XENPVUSB_POLICY") is { Length: > 0 } p ? p : UsbPolicy.DefaultPath;

    private static UsbPolicy LoadPolicy()
    {
        (UsbPolicy policy, IReadOnlyList<string> errors) = UsbPolicy.Load(PolicyPath);
        foreach (string e in errors)
        {
            Console.Error.WriteLine($"xenpvusb: warning: {PolicyPath}: {e}");
        }
        return policy;
    }

    private sealed record AssignableRow(UsbDeviceInfo Device, AssignmentRule? Rule, PolicyVerdict Policy);

    private static IEnumerable<Command> ApplyCommands()
    {
        var domain = new Argument<string>("Domain") { Description = "guest name (default: every running guest)", Arity = ArgumentArity.ZeroOrOne };
        yield return Verb("apply", "Carry out the persistent assignments now (xenpvusbd does so by itself when a domain appears or a device is plugged in)", [domain], async (r, ctx, ct) =>
        {
            string? name = r.GetValue(domain);
            if (name is not null)
            {
                name = await DomainNameAsync(ctx, name, ct);
            }
            PrintApplied(await Applier(ctx).ApplyAsync(name, cancellationToken: ct));
        });

        var hookArgs = new Argument<string[]>("arguments")
        {
            Description = "as libvirt gives them: <domain> <operation> <sub-operation> <extra>; the domain XML on stdin",
            Arity = ArgumentArity.OneOrMore,
        };
        var hook = new Command("libvirt-hook", "libvirt's libxl hook (/etc/libvirt/hooks/libxl): on started and reconnect, the domain's assignments (the file's and its XML's <xenpvusb:assign>)");
        hook.Arguments.Add(hookArgs);
        hook.SetAction(async (result, ct) =>
        {
            string[] args = result.GetValue(hookArgs) ?? [];
            if (args.Length < 2 || args[1] is not ("started" or "reconnect"))
            {
                return 0; // prepare, start, stopped, release, migrate...: nothing to do, and never in libvirt's way
            }
            string name = args[0];
            IReadOnlyList<AssignmentRule> extra;
            try
            {
                extra = LibvirtRules(name, await Console.In.ReadToEndAsync(ct));
            }
            catch (Exception e) when (e is XmlException or FormatException)
            {
                Console.Error.WriteLine($"xenpvusb libvirt-hook: domain {name}: {e.Message}");
                return 1;
            }
            try
            {
                await using CliContext ctx = await CliContext.OpenAsync(ct);
                PrintApplied(await Applier(ctx).ApplyAsync(name, extra, cancellationToken: ct));
                return 0;
            }
            catch (Exception e) when (e is ToolstackException or XenPvUsb.XenStore.XenStoreException or XenPvUsb.XenStore.XenStoreConnectionClosedException)
            {
                Console.Error.WriteLine($"xenpvusb libvirt-hook: domain {name}: {e.Message}");
                return 1;
            }
        });
        yield return hook;
    }

    private static AssignmentApplier Applier(CliContext ctx) => new(ctx.Store, new AssignmentSources
    {
        AssignmentsPath = AssignmentsPath,
        PolicyPath = PolicyPath,
        SysfsRoot = CliContext.SysfsRoot,
        Backend = DomId.Dom0,
        VerdictTimeout = s_verdictTimeout,
    }, NullLogger.Instance);

    // Rules name domains by name; a domain id given on the command line is turned into its name.
    private static async Task<string> DomainNameAsync(CliContext ctx, string domain, CancellationToken ct)
    {
        DomId id = await ctx.Toolstack.ResolveDomainAsync(domain, ct);
        return await ctx.Store.ReadAsync($"/local/domain/{id.Value}/name", cancellationToken: ct) is { Length: > 0 } name
            ? name : throw new ToolstackException($"domain {id} has no name; persistent assignments name domains");
    }

    private static void PrintApplied(IReadOnlyList<AppliedAction> results)
    {
        if (results.Count == 0)
        {
            Console.WriteLine("nothing to do");
            return;
        }
        foreach (AppliedAction a in results)
        {
            string rule = AssignmentApplier.Describe(a.Action.Rule);
            string what = a.Action switch
            {
                RefusalAction f => $"{a.Action.Rule.Domain}: not {f.BusId}: {a.Outcome}",
                _ => $"{a.Action.Rule.Domain}: {a.Outcome}",
            };
            Console.WriteLine($"{(a.Done ? "done" : "not done")}: {what} (rule {rule})");
        }
    }

    /// <summary>
    /// The &lt;xenpvusb:assign match="id=0781:5567 serial=X" port="1" controller="2:8" force="yes"/&gt; elements in a
    /// libvirt domain XML's &lt;metadata&gt; (libvirt keeps one element per namespace there, so several go inside one
    /// &lt;xenpvusb:assignments&gt;), as rules for that domain. No DTD, no external entities.
    /// </summary>
    internal static IReadOnlyList<AssignmentRule> LibvirtRules(string domain, string xml)
    {
        var rules = new List<AssignmentRule>();
        if (string.IsNullOrWhiteSpace(xml))
        {
            return rules;
        }
        var settings = new XmlReaderSettings { DtdProcessing = DtdProcessing.Prohibit, XmlResolver = null, MaxCharactersInDocument = 16 << 20 };
        using var reader = XmlReader.Create(new StringReader(xml), settings);
        var doc = new XmlDocument { XmlResolver = null };
        doc.Load(reader);
        var ns = new XmlNamespaceManager(doc.NameTable);
        ns.AddNamespace("x", LibvirtNamespace);
        XmlNodeList? nodes = doc.SelectNodes("/domain/metadata//x:assign", ns);
        int index = 0;
        foreach (XmlElement e in nodes?.OfType<XmlElement>() ?? [])
        {
            index++;
            var words = new List<string> { domain };
            words.AddRange(e.GetAttribute("match").Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries));
            if (e.GetAttribute("port") is { Length: > 0 } port)
            {
                words.Add($"port={port}");
            }
            if (e.GetAttribute("controller") is { Length: > 0 } controller)
            {
                words.Add($"controller={controller}");
            }
            if (e.GetAttribute("force") is "yes" or "true" or "1")
            {
                words.Add("force");
            }
            try
            {
                rules.Add(AssignmentFile.ParseRule(words));
            }
            catch (FormatException ex)
            {
                throw new FormatException($"<xenpvusb:assign> number {index}: {ex.Message}");
            }
        }
        return rules;
    }

    private static string ListJson(DomId domain, IReadOnlyList<VusbControllerInfo> controllers, IReadOnlyList<UsbDeviceInfo> host) => Json(w =>
    {
        w.WriteStartObject();
        w.WriteNumber("domid", domain.Value);
        w.WriteStartArray("controllers");
        foreach (VusbControllerInfo c in controllers)
        {
            w.WriteStartObject();
            w.WriteNumber("devid", c.DevId);
            w.WriteString("type", c.Type);
            w.WriteNumber("backendDomid", c.BackendDomain);
            w.WriteNumber("frontendState", c.FrontendState);
            w.WriteNumber("backendState", c.BackendState);
            w.WriteNumber("usbVersion", c.UsbVersion);
            w.WriteNumber("ports", c.NumPorts);
            w.WriteStartArray("portList");
            for (int p = 1; p <= c.NumPorts; p++)
            {
                string? b = c.Ports[p - 1];
                w.WriteStartObject();
                w.WriteNumber("port", p);
                if (string.IsNullOrEmpty(b))
                {
                    w.WriteNull("busid");
                }
                else
                {
                    w.WriteString("busid", b);
                    UsbDeviceInfo? dev = host.FirstOrDefault(h => h.BusId == b);
                    w.WriteBoolean("present", dev is not null);
                    if (dev is not null)
                    {
                        WriteDevice(w, dev);
                    }
                }
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteEndObject();
    });

    private static string AssignableJson(IReadOnlyList<AssignableRow> rows) => Json(w =>
    {
        w.WriteStartArray();
        foreach (AssignableRow row in rows)
        {
            w.WriteStartObject();
            w.WriteString("busid", row.Device.BusId);
            WriteDevice(w, row.Device);
            if (row.Rule is { } rule)
            {
                w.WriteStartObject("assignment");
                w.WriteString("domain", rule.Domain);
                w.WriteString("match", rule.Match.ToString());
                w.WriteNumber("line", rule.Line);
                w.WriteEndObject();
            }
            else
            {
                w.WriteNull("assignment");
            }
            w.WriteStartObject("policy");
            w.WriteBoolean("allowed", row.Policy.Allowed);
            w.WriteNumber("line", row.Policy.Line);
            w.WriteString("reason", row.Policy.Reason);
            w.WriteEndObject();
            w.WriteEndObject();
        }
        w.WriteEndArray();
    });

    private static void WriteDevice(Utf8JsonWriter w, UsbDeviceInfo dev)
    {
        w.WriteNumber("bus", dev.BusNum);
        w.WriteNumber("device", dev.DevNum);
        w.WriteString("vendorId", dev.VendorId.ToString("x4", CultureInfo.InvariantCulture));
        w.WriteString("productId", dev.ProductId.ToString("x4", CultureInfo.InvariantCulture));
        w.WriteString("name", Describe(dev));
        w.WriteString("manufacturer", dev.Manufacturer);
        w.WriteString("product", dev.Product);
        w.WriteString("serial", dev.Serial);
        w.WriteString("speed", XenPvUsb.Host.UsbSysfs.FormatSpeed(dev.Speed));
        w.WriteString("class", dev.DeviceClass.ToString("x2", CultureInfo.InvariantCulture));
    }

    private static string Json(Action<Utf8JsonWriter> write)
    {
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
        {
            write(w);
        }
        return System.Text.Encoding.UTF8.GetString(stream.ToArray());
    }
}
