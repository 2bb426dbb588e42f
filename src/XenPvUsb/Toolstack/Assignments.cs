using System.Globalization;
using System.Text;
using XenPvUsb.Host;
using XenPvUsb.Usb;

namespace XenPvUsb.Toolstack;

/// <summary>
/// Which host devices a rule names: every key given must hold (vendor:product, serial, physical port path,
/// an interface class). A rule with none of them matches nothing.
/// </summary>
public sealed record DeviceMatch(ushort? VendorId = null, ushort? ProductId = null, string? Serial = null, string? Path = null, byte? InterfaceClass = null)
{
    public bool IsEmpty => VendorId is null && Serial is null && Path is null && InterfaceClass is null;

    /// <summary>
    /// A rule that can take devices nobody named one by one: no serial, no port path, not a whole vendor:product
    /// (a vendor alone, or a class). Broad rules never take devices dom0 needs unless forced.
    /// </summary>
    public bool IsBroad => Serial is null && Path is null && ProductId is null;

    public bool Matches(UsbDeviceInfo device, IReadOnlyCollection<byte> interfaceClasses)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(interfaceClasses);
        if (IsEmpty)
        {
            return false;
        }
        return (VendorId is null || VendorId == device.VendorId)
            && (ProductId is null || ProductId == device.ProductId)
            && (Serial is null || string.Equals(Serial, device.Serial, StringComparison.Ordinal))
            && (Path is null || string.Equals(Path, device.BusId, StringComparison.Ordinal))
            && (InterfaceClass is null || device.DeviceClass == InterfaceClass || interfaceClasses.Contains(InterfaceClass.Value));
    }

    /// <summary>The match in the file's words (id=, serial=, path=, class=).</summary>
    public override string ToString()
    {
        var parts = new List<string>(4);
        if (VendorId is { } v)
        {
            parts.Add(ProductId is { } p ? $"id={v:x4}:{p:x4}" : $"id={v:x4}:*");
        }
        if (Serial is not null)
        {
            parts.Add($"serial={Serial}");
        }
        if (Path is not null)
        {
            parts.Add($"path={Path}");
        }
        if (InterfaceClass is { } c)
        {
            parts.Add($"class={c:x2}");
        }
        return string.Join(' ', parts);
    }
}

/// <summary>The controller a rule asks for when the domain has none: USB version and port count.</summary>
public readonly record struct ControllerSpec(int UsbVersion, int Ports)
{
    public override string ToString() => $"{UsbVersion}:{Ports}";
}

/// <summary>
/// One persistent assignment: devices matching <see cref="Match"/> go to the domain named <see cref="Domain"/>
/// (by name, so it survives reboots and new domain ids), on <see cref="Port"/> if given, through a controller
/// made as <see cref="Controller"/> says if the domain has none. <see cref="Force"/> lets a broad rule take
/// devices dom0 needs. <see cref="Line"/> is where it is in the file (1-based; 0 for a rule not from a file).
/// </summary>
public sealed record AssignmentRule(string Domain, DeviceMatch Match, int? Port = null, ControllerSpec? Controller = null, bool Force = false, int Line = 0)
{
    /// <summary>The rule as a line of the file.</summary>
    public string Format()
    {
        var sb = new StringBuilder();
        sb.Append(Domain).Append(' ').Append(Match);
        if (Port is { } p)
        {
            sb.Append(CultureInfo.InvariantCulture, $" port={p}");
        }
        if (Controller is { } c)
        {
            sb.Append(CultureInfo.InvariantCulture, $" controller={c}");
        }
        if (Force)
        {
            sb.Append(" force");
        }
        return sb.ToString();
    }

    /// <summary>True if this rule says the same as <paramref name="other"/> (same domain and match, wherever they are in the file).</summary>
    public bool SameAs(AssignmentRule other) =>
        string.Equals(Domain, other.Domain, StringComparison.Ordinal) && Match == other.Match;
}

/// <summary>
/// The persistent assignment file (/etc/xenpvusb/assignments.conf; format in xenpvusb-assignments(5)): one rule
/// a line, <c>&lt;domain&gt; &lt;key&gt;=&lt;value&gt;...</c> with keys id (vendor:product in hex, product may be *),
/// serial, path (a physical port path such as 3-1.4), class (an interface class in hex), port (1-31), controller
/// (usbver:ports), and the word force; # starts a comment. Order matters: a device two rules match goes to the
/// first. The CLI edits it in place, keeping comments and every line it does not change.
/// </summary>
public static class AssignmentFile
{
    public const string DefaultPath = "/etc/xenpvusb/assignments.conf";

    private const string Header =
        "# xenpvusb persistent assignments: <domain> <match>... [port=N] [controller=usbver:ports] [force]\n" +
        "# match keys: id=vvvv:pppp (or vvvv:*), serial=S, path=B-P.P, class=cc; see xenpvusb-assignments(5).\n";

    /// <summary>Parses the file's text: the rules in order, and one message per bad line (the line is skipped).</summary>
    public static (IReadOnlyList<AssignmentRule> Rules, IReadOnlyList<string> Errors) Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var rules = new List<AssignmentRule>();
        var errors = new List<string>();
        string[] lines = text.Split('\n');
        for (int i = 0; i < lines.Length; i++)
        {
            string line = StripComment(lines[i]).Trim();
            if (line.Length == 0)
            {
                continue;
            }
            try
            {
                rules.Add(ParseRule(line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries), i + 1));
            }
            catch (FormatException e)
            {
                errors.Add($"line {i + 1}: {e.Message}");
            }
        }
        return (rules, errors);
    }

    /// <summary>
    /// Reads a rule from the words of a command line or a file line: the domain first, then key=value words
    /// and force. Throws <see cref="FormatException"/> with one clear message.
    /// </summary>
    public static AssignmentRule ParseRule(IReadOnlyList<string> words, int line = 0)
    {
        ArgumentNullException.ThrowIfNull(words);
        if (words.Count == 0)
        {
            throw new FormatException("empty rule");
        }
        string domain = words[0];
        if (!IsDomainName(domain))
        {
            throw new FormatException($"'{domain}' is not a domain name (letters, digits, '-', '_', '.')");
        }
        ushort? vendor = null, product = null;
        string? serial = null, path = null;
        byte? cls = null;
        int? port = null;
        ControllerSpec? controller = null;
        bool force = false;
        for (int i = 1; i < words.Count; i++)
        {
            string w = words[i];
            if (w == "force")
            {
                force = true;
                continue;
            }
            int eq = w.IndexOf('=', StringComparison.Ordinal);
            if (eq <= 0 || eq == w.Length - 1)
            {
                throw new FormatException($"'{w}' is not key=value (keys: id, serial, path, class, port, controller) or force");
            }
            string key = w[..eq];
            string value = w[(eq + 1)..];
            switch (key)
            {
                case "id" or "vid:pid":
                    (vendor, product) = ParseId(value);
                    break;
                case "serial":
                    serial = value;
                    break;
                case "path":
                    if (!UsbSysfs.IsValidBusId(value) || value.StartsWith("usb", StringComparison.Ordinal))
                    {
                        throw new FormatException($"path '{value}' is not a physical port path such as 3-1.4");
                    }
                    path = value;
                    break;
                case "class":
                    cls = byte.TryParse(value.StartsWith("0x", StringComparison.OrdinalIgnoreCase) ? value[2..] : value, NumberStyles.HexNumber, CultureInfo.InvariantCulture, out byte c)
                        ? c : throw new FormatException($"class '{value}' is not an interface class in hex (00-ff)");
                    break;
                case "port":
                    port = int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out int p) && p is >= 1 and <= Usbif.Usbif.USBIF_MAX_PORTNR
                        ? p : throw new FormatException($"port '{value}' is not 1 to {Usbif.Usbif.USBIF_MAX_PORTNR}");
                    break;
                case "controller":
                    controller = ParseController(value);
                    break;
                default:
                    throw new FormatException($"unknown key '{key}' (keys: id, serial, path, class, port, controller)");
            }
        }
        var match = new DeviceMatch(vendor, product, serial, path, cls);
        if (match.IsEmpty)
        {
            throw new FormatException("a rule needs at least one of id=, serial=, path=, class=");
        }
        if (controller is { } spec && port > spec.Ports)
        {
            throw new FormatException($"port {port} is beyond the {spec.Ports} ports of the controller it asks for");
        }
        return new AssignmentRule(domain, match, port, controller, force, line);
    }

    /// <summary>The first rule that takes <paramref name="device"/> (rules apply in file order), or null.</summary>
    public static AssignmentRule? FirstMatch(IReadOnlyList<AssignmentRule> rules, UsbDeviceInfo device, IReadOnlyCollection<byte> interfaceClasses)
    {
        ArgumentNullException.ThrowIfNull(rules);
        foreach (AssignmentRule rule in rules)
        {
            if (rule.Match.Matches(device, interfaceClasses))
            {
                return rule;
            }
        }
        return null;
    }

    /// <summary>
    /// The interface classes (bInterfaceClass) of every interface descriptor in <paramref name="descriptors"/>
    /// (sysfs's descriptors file: the device descriptor, then each configuration's). A bad length ends the walk.
    /// </summary>
    public static IReadOnlyCollection<byte> InterfaceClasses(ReadOnlySpan<byte> descriptors) =>
        UsbPolicy.Interfaces(descriptors).Select(i => i.Class).ToHashSet();

    /// <summary>The rules of the file at <paramref name="path"/> (none if it does not exist).</summary>
    public static (IReadOnlyList<AssignmentRule> Rules, IReadOnlyList<string> Errors) Load(string path) =>
        File.Exists(path) ? Parse(File.ReadAllText(path)) : ([], []);

    /// <summary>
    /// Appends <paramref name="rule"/> to the file (made, with its directory, if missing). Returns false and changes
    /// nothing if the file already has a rule that says the same.
    /// </summary>
    public static bool Add(string path, AssignmentRule rule)
    {
        ArgumentNullException.ThrowIfNull(rule);
        string text = File.Exists(path) ? File.ReadAllText(path) : Header;
        (IReadOnlyList<AssignmentRule> rules, _) = Parse(text);
        if (rules.Any(r => r.SameAs(rule)))
        {
            return false;
        }
        if (text.Length > 0 && !text.EndsWith('\n'))
        {
            text += "\n";
        }
        WriteAtomically(path, text + rule.Format() + "\n");
        return true;
    }

    /// <summary>
    /// Removes the domain's rules: those with exactly <paramref name="match"/>, or all of them if it is null.
    /// Comments and other lines stay. Returns the rules removed.
    /// </summary>
    public static IReadOnlyList<AssignmentRule> Remove(string path, string domain, DeviceMatch? match)
    {
        if (!File.Exists(path))
        {
            return [];
        }
        string[] lines = File.ReadAllText(path).Split('\n');
        var removed = new List<AssignmentRule>();
        var kept = new StringBuilder();
        for (int i = 0; i < lines.Length; i++)
        {
            string line = StripComment(lines[i]).Trim();
            AssignmentRule? rule = null;
            if (line.Length > 0)
            {
                try
                {
                    rule = ParseRule(line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries), i + 1);
                }
                catch (FormatException)
                {
                    // a bad line is the administrator's: kept as it is
                }
            }
            if (rule is not null && rule.Domain == domain && (match is null || rule.Match == match))
            {
                removed.Add(rule);
                continue;
            }
            kept.Append(lines[i]);
            if (i < lines.Length - 1)
            {
                kept.Append('\n');
            }
        }
        if (removed.Count > 0)
        {
            WriteAtomically(path, kept.ToString());
        }
        return removed;
    }

    private static (ushort Vendor, ushort? Product) ParseId(string value)
    {
        int colon = value.IndexOf(':', StringComparison.Ordinal);
        if (colon != 4 || value.Length is not (9 or 6)
            || !ushort.TryParse(value.AsSpan(0, 4), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out ushort vendor))
        {
            throw new FormatException($"id '{value}' is not vendor:product in hex, e.g. 0781:5581 (or 0781:*)");
        }
        string productText = value[5..];
        if (productText == "*")
        {
            return (vendor, null);
        }
        return productText.Length == 4 && ushort.TryParse(productText, NumberStyles.HexNumber, CultureInfo.InvariantCulture, out ushort product)
            ? (vendor, product)
            : throw new FormatException($"id '{value}' is not vendor:product in hex, e.g. 0781:5581 (or 0781:*)");
    }

    private static ControllerSpec ParseController(string value)
    {
        int colon = value.IndexOf(':', StringComparison.Ordinal);
        if (colon > 0
            && int.TryParse(value.AsSpan(0, colon), NumberStyles.None, CultureInfo.InvariantCulture, out int version) && version is 1 or 2
            && int.TryParse(value.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out int ports)
            && ports is >= 1 and <= Usbif.Usbif.USBIF_MAX_PORTNR)
        {
            return new ControllerSpec(version, ports);
        }
        throw new FormatException($"controller '{value}' is not usbver:ports (usbver 1 or 2, 1 to {Usbif.Usbif.USBIF_MAX_PORTNR} ports), e.g. 2:8");
    }

    private static bool IsDomainName(string s) =>
        s.Length is > 0 and <= 64 && s.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.') && !s.Contains('=', StringComparison.Ordinal);

    private static string StripComment(string line)
    {
        int hash = line.IndexOf('#', StringComparison.Ordinal);
        return hash < 0 ? line : line[..hash];
    }

    private static void WriteAtomically(string path, string text)
    {
        string? dir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path));
        if (dir is not null)
        {
            Directory.CreateDirectory(dir);
        }
        string temp = path + ".tmp";
        File.WriteAllText(temp, text);
        File.Move(temp, path, overwrite: true);
    }
}
