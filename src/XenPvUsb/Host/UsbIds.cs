using System.Globalization;

namespace XenPvUsb.Host;

/// <summary>
/// Vendor and product names from the usb.ids database (host-interfaces.md §2.5), for devices that
/// have no product string. Only the vendor/device section is read: "vvvv  name" at column 0, then
/// "\tpppp  name" for its products; interface lines and the later class/HID/language tables are skipped.
/// </summary>
public sealed class UsbIds
{
    /// <summary>Where distributions install usb.ids, searched in order.</summary>
    public static readonly IReadOnlyList<string> SearchPaths =
    [
        "/usr/share/misc/usb.ids",
        "/usr/share/hwdata/usb.ids",
        "/usr/share/usb.ids",
        "/var/lib/usbutils/usb.ids",
    ];

    private static readonly Lazy<UsbIds> s_system = new(LoadSystem, LazyThreadSafetyMode.ExecutionAndPublication);

    private readonly Dictionary<ushort, string> _vendors;
    private readonly Dictionary<uint, string> _products;

    private UsbIds(Dictionary<ushort, string> vendors, Dictionary<uint, string> products)
    {
        _vendors = vendors;
        _products = products;
    }

    /// <summary>The system's usb.ids, read on first use; empty if none of <see cref="SearchPaths"/> is readable.</summary>
    public static UsbIds System => s_system.Value;

    /// <summary>An empty database (every lookup returns null).</summary>
    public static UsbIds Empty { get; } = new([], []);

    public int VendorCount => _vendors.Count;

    public int ProductCount => _products.Count;

    /// <summary>Reads the first readable file of <paramref name="paths"/>; empty if none is.</summary>
    public static UsbIds Load(IEnumerable<string> paths)
    {
        ArgumentNullException.ThrowIfNull(paths);
        foreach (string path in paths)
        {
            try
            {
                using var reader = new StreamReader(path, global::System.Text.Encoding.UTF8);
                return Parse(reader);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
            }
        }
        return Empty;
    }

    public static UsbIds Parse(TextReader reader)
    {
        ArgumentNullException.ThrowIfNull(reader);
        var vendors = new Dictionary<ushort, string>();
        var products = new Dictionary<uint, string>();
        int vendor = -1;
        while (reader.ReadLine() is { } line)
        {
            if (line.Length == 0 || line[0] == '#')
            {
                continue;
            }
            if (line[0] == '\t')
            {
                // Products belong to the vendor above; "\t\t" interface lines and sub-entries of other tables are skipped.
                if (vendor >= 0 && line.Length > 1 && line[1] != '\t' && TryParseEntry(line.AsSpan(1), out ushort product, out string? productName))
                {
                    products.TryAdd(((uint)vendor << 16) | product, productName);
                }
                continue;
            }
            if (TryParseEntry(line, out ushort id, out string? name))
            {
                vendor = id;
                vendors.TryAdd(id, name);
            }
            else
            {
                // "C 00  class", "HID ...", "L ...": the vendor section is over.
                vendor = -1;
            }
        }
        return new UsbIds(vendors, products);
    }

    public string? VendorName(ushort vendorId) => _vendors.GetValueOrDefault(vendorId);

    public string? ProductName(ushort vendorId, ushort productId) => _products.GetValueOrDefault(((uint)vendorId << 16) | productId);

    private static UsbIds LoadSystem() => Load(SearchPaths);

    // "xxxx  name": four hex digits, two spaces, a non-empty name.
    private static bool TryParseEntry(ReadOnlySpan<char> line, out ushort id, out string name)
    {
        id = 0;
        name = "";
        if (line.Length < 7 || line[4] != ' ' || line[5] != ' '
            || !ushort.TryParse(line[..4], NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out id))
        {
            return false;
        }
        ReadOnlySpan<char> text = line[6..].Trim();
        if (text.IsEmpty)
        {
            return false;
        }
        name = text.ToString();
        return true;
    }
}
