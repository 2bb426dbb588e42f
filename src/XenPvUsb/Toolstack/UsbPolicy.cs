using System.Globalization;
using XenPvUsb.Usb;

namespace XenPvUsb.Toolstack;

/// <summary>A device's interface as the policy sees it: class, subclass and protocol (from the interface descriptor).</summary>
public readonly record struct UsbInterfaceClass(byte Class, byte SubClass, byte Protocol);

/// <summary>One line of the policy file: ALLOW or DENY, and the keys that must all hold (none: every device).</summary>
public sealed record UsbPolicyLine(bool Allow, ushort? VendorId, ushort? ProductId, byte? Class, byte? SubClass, byte? Protocol, int Line)
{
    /// <summary>
    /// True if the device matches: vid and pid against the device; class, subclass and prot against the device
    /// descriptor's (when its class says something, i.e. is not 0) or any one interface's, all three from the same one.
    /// </summary>
    public bool Matches(UsbDeviceInfo device, IReadOnlyCollection<UsbInterfaceClass> interfaces)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(interfaces);
        if ((VendorId is { } v && v != device.VendorId) || (ProductId is { } p && p != device.ProductId))
        {
            return false;
        }
        if (Class is null && SubClass is null && Protocol is null)
        {
            return true;
        }
        // The device descriptor's class counts as one more "interface" (subclass and protocol unknown there: only class= can match it).
        if (device.DeviceClass != 0 && SubClass is null && Protocol is null && Class == device.DeviceClass)
        {
            return true;
        }
        foreach (UsbInterfaceClass i in interfaces)
        {
            if ((Class is null || Class == i.Class) && (SubClass is null || SubClass == i.SubClass) && (Protocol is null || Protocol == i.Protocol))
            {
                return true;
            }
        }
        return false;
    }

    public override string ToString()
    {
        var parts = new List<string>(5);
        if (VendorId is { } v)
        {
            parts.Add($"vid={v:x4}");
        }
        if (ProductId is { } p)
        {
            parts.Add($"pid={p:x4}");
        }
        if (Class is { } c)
        {
            parts.Add($"class={c:x2}");
        }
        if (SubClass is { } s)
        {
            parts.Add($"subclass={s:x2}");
        }
        if (Protocol is { } pr)
        {
            parts.Add($"prot={pr:x2}");
        }
        return (Allow ? "ALLOW:" : "DENY:") + string.Join(' ', parts);
    }
}

/// <summary>What the policy says of one device, and which line said it (0: no line matched, or the built-in default).</summary>
public readonly record struct PolicyVerdict(bool Allowed, int Line, string Reason);

/// <summary>
/// The USB policy (/etc/xenpvusb/usb-policy.conf, format in xenpvusb-usb-policy(5)), in the manner of XCP-ng's
/// usb-policy.conf: one line each <c>ALLOW:</c> or <c>DENY:</c> followed by optional <c>vid=XXXX pid=XXXX class=XX
/// subclass=XX prot=XX</c> (hex); # starts a comment. A device is checked against the lines in order and the first
/// line it matches decides; a device no line matches is denied. Without a file the built-in policy applies: hubs
/// denied, everything else allowed. Applies to persistent assignments and to one-off attaches from the CLI; force
/// does not override it.
/// </summary>
public sealed class UsbPolicy
{
    public const string DefaultPath = "/etc/xenpvusb/usb-policy.conf";

    /// <summary>The policy when there is no file: the shipped file's lines.</summary>
    public static UsbPolicy BuiltIn { get; } = Parse("DENY:class=09\nALLOW:\n", builtIn: true).Policy;

    private UsbPolicy(IReadOnlyList<UsbPolicyLine> lines, bool builtIn)
    {
        Lines = lines;
        IsBuiltIn = builtIn;
    }

    public IReadOnlyList<UsbPolicyLine> Lines { get; }

    public bool IsBuiltIn { get; }

    /// <summary>The first line that matches decides; none: denied.</summary>
    public PolicyVerdict Evaluate(UsbDeviceInfo device, IReadOnlyCollection<UsbInterfaceClass> interfaces)
    {
        foreach (UsbPolicyLine line in Lines)
        {
            if (line.Matches(device, interfaces))
            {
                string where = IsBuiltIn ? "the built-in policy" : $"policy line {line.Line}";
                return new PolicyVerdict(line.Allow, IsBuiltIn ? 0 : line.Line, $"{(line.Allow ? "allowed" : "denied")} by {where} ({line})");
            }
        }
        return new PolicyVerdict(false, 0, "denied by the policy: no line matches it (default deny)");
    }

    /// <summary>The policy of the file at <paramref name="path"/>, or the built-in one if there is no such file.</summary>
    public static (UsbPolicy Policy, IReadOnlyList<string> Errors) Load(string path) =>
        File.Exists(path) ? Parse(File.ReadAllText(path)) : (BuiltIn, []);

    /// <summary>
    /// Parses a policy. A bad line is reported (one message each) and treated as DENY: of everything from there on
    /// would be too much, ignoring it could allow what it meant to deny; so a line that does not parse denies every
    /// device from its place in the file, which the message says.
    /// </summary>
    public static (UsbPolicy Policy, IReadOnlyList<string> Errors) Parse(string text, bool builtIn = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        var lines = new List<UsbPolicyLine>();
        var errors = new List<string>();
        string[] raw = text.Split('\n');
        for (int i = 0; i < raw.Length; i++)
        {
            string line = raw[i];
            int hash = line.IndexOf('#', StringComparison.Ordinal);
            if (hash >= 0)
            {
                line = line[..hash];
            }
            line = line.Trim();
            if (line.Length == 0)
            {
                continue;
            }
            try
            {
                lines.Add(ParseLine(line, i + 1));
            }
            catch (FormatException e)
            {
                errors.Add($"line {i + 1}: {e.Message}; read as DENY: (every device the lines before it leave undecided is denied)");
                lines.Add(new UsbPolicyLine(false, null, null, null, null, null, i + 1));
            }
        }
        return (new UsbPolicy(lines, builtIn), errors);
    }

    private static UsbPolicyLine ParseLine(string line, int number)
    {
        int colon = line.IndexOf(':', StringComparison.Ordinal);
        string verb = colon < 0 ? line.Split([' ', '\t'], 2)[0] : line[..colon].Trim();
        bool allow = verb.ToUpperInvariant() switch
        {
            "ALLOW" => true,
            "DENY" => false,
            _ => throw new FormatException($"'{verb}' is not ALLOW: or DENY:"),
        };
        if (colon < 0)
        {
            throw new FormatException($"'{verb}' needs a colon ({verb.ToUpperInvariant()}:)");
        }
        ushort? vid = null, pid = null;
        byte? cls = null, sub = null, prot = null;
        foreach (string word in line[(colon + 1)..].Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries))
        {
            int eq = word.IndexOf('=', StringComparison.Ordinal);
            string key = eq > 0 ? word[..eq].ToLowerInvariant() : word;
            string value = eq > 0 ? word[(eq + 1)..] : "";
            switch (key)
            {
                case "vid":
                    vid = Set(vid, Hex16(value, key), key);
                    break;
                case "pid":
                    pid = Set(pid, Hex16(value, key), key);
                    break;
                case "class":
                    cls = Set(cls, Hex8(value, key), key);
                    break;
                case "subclass":
                    sub = Set(sub, Hex8(value, key), key);
                    break;
                case "prot":
                    prot = Set(prot, Hex8(value, key), key);
                    break;
                default:
                    throw new FormatException($"unknown key '{word}' (expected vid=, pid=, class=, subclass=, prot=)");
            }
        }
        return new UsbPolicyLine(allow, vid, pid, cls, sub, prot, number);
    }

    private static T? Set<T>(T? old, T value, string key) where T : struct =>
        old is null ? value : throw new FormatException($"{key}= given twice");

    private static ushort Hex16(string s, string key) =>
        s.Length is >= 1 and <= 4 && ushort.TryParse(s, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ushort v)
            ? v : throw new FormatException($"{key}= must be 1 to 4 hex digits, not '{s}'");

    private static byte Hex8(string s, string key) =>
        s.Length is >= 1 and <= 2 && byte.TryParse(s, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out byte v)
            ? v : throw new FormatException($"{key}= must be 1 or 2 hex digits, not '{s}'");

    /// <summary>Class, subclass and protocol of every interface descriptor in sysfs's descriptors file (a bad length ends the walk).</summary>
    public static IReadOnlyCollection<UsbInterfaceClass> Interfaces(ReadOnlySpan<byte> descriptors)
    {
        var result = new HashSet<UsbInterfaceClass>();
        int i = 0;
        while (i + 2 <= descriptors.Length)
        {
            int length = descriptors[i];
            if (length < 2 || i + length > descriptors.Length)
            {
                break;
            }
            if (descriptors[i + 1] == 4 && length >= 9)
            {
                result.Add(new UsbInterfaceClass(descriptors[i + 5], descriptors[i + 6], descriptors[i + 7]));
            }
            i += length;
        }
        return result;
    }
}
