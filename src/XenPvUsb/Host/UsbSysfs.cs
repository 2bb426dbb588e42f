using System.Globalization;
using XenPvUsb.Usb;

namespace XenPvUsb.Host;

/// <summary>
/// Reads USB devices from sysfs (<c>/sys/bus/usb/devices</c>, host-interfaces.md §2.1–2.2). Only
/// device entries are read (interfaces, whose names contain ':', are skipped). Missing optional
/// attributes and devices that vanish mid-scan are tolerated.
/// </summary>
public static partial class UsbSysfs
{
    /// <summary>
    /// Port numbers in a bus id: USB 2.0 §4.1.1 allows seven tiers counting the root hub's, i.e. a
    /// device at most six ports deep (the kernel's MAX_TOPO_LEVEL is 6).
    /// </summary>
    public const int MaxPortDepth = 6;

    /// <summary>Every USB device sysfs lists now, root hubs and hubs included, ordered by bus then port path.</summary>
    public static IReadOnlyList<UsbDeviceInfo> Enumerate(string sysfsRoot = "/sys")
    {
        ArgumentNullException.ThrowIfNull(sysfsRoot);
        string[] entries;
        try
        {
            entries = Directory.GetFileSystemEntries(DevicesDirectory(sysfsRoot));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return [];
        }

        var devices = new List<UsbDeviceInfo>(entries.Length);
        foreach (string entry in entries)
        {
            string name = Path.GetFileName(entry);
            if (name.Contains(':', StringComparison.Ordinal) || !IsValidBusId(name))
            {
                continue;
            }

            if (ReadDevice(sysfsRoot, name) is { } info)
            {
                devices.Add(info);
            }
        }

        devices.Sort(static (a, b) => CompareBusIds(a.BusId, b.BusId));
        return devices;
    }

    /// <summary>The device at <paramref name="busId"/>, or null if none is there (or it vanished while being read).</summary>
    /// <exception cref="ArgumentException"><paramref name="busId"/> is not a well-formed bus id.</exception>
    public static UsbDeviceInfo? Read(string sysfsRoot, string busId)
    {
        ArgumentNullException.ThrowIfNull(sysfsRoot);
        if (!IsValidBusId(busId))
        {
            throw new ArgumentException($"Invalid USB bus id '{busId}'.", nameof(busId));
        }

        return ReadDevice(sysfsRoot, busId);
    }

    /// <summary>The device with this bus number and device number (as in /dev/bus/usb/BBB/DDD), or null.</summary>
    public static UsbDeviceInfo? FindByAddress(string sysfsRoot, int busNum, int devNum)
    {
        foreach (UsbDeviceInfo info in Enumerate(sysfsRoot))
        {
            if (info.BusNum == busNum && info.DevNum == devNum)
            {
                return info;
            }
        }

        return null;
    }

    /// <summary>
    /// True for a root hub "usbN" or a device "&lt;bus&gt;-&lt;port&gt;[.&lt;port&gt;]*" with bus 1..999,
    /// ports 1..255, at most <see cref="MaxPortDepth"/> ports and no leading zeros. It guards sysfs
    /// paths built from user and guest input, so anything else (separators, "..", spaces) is refused.
    /// </summary>
    public static bool IsValidBusId(string? busId)
    {
        if (string.IsNullOrEmpty(busId) || busId.Length > 32)
        {
            return false;
        }

        ReadOnlySpan<char> id = busId;
        if (id.StartsWith("usb", StringComparison.Ordinal))
        {
            return IsNumber(id[3..], 999);
        }

        int dash = id.IndexOf('-');
        if (dash < 0 || !IsNumber(id[..dash], 999))
        {
            return false;
        }

        ReadOnlySpan<char> path = id[(dash + 1)..];
        int depth = 0;
        foreach (Range port in path.Split('.'))
        {
            if (++depth > MaxPortDepth || !IsNumber(path[port], 255))
            {
                return false;
            }
        }

        return depth > 0;
    }

    /// <summary>Parses the sysfs speed attribute (Mbit/s).</summary>
    public static UsbSpeed ParseSpeed(string? speed) => speed switch
    {
        "1.5" => UsbSpeed.Low,
        "12" => UsbSpeed.Full,
        "480" => UsbSpeed.High,
        "5000" => UsbSpeed.Super,
        "10000" or "20000" => UsbSpeed.SuperPlus,
        _ => UsbSpeed.Unknown,
    };

    /// <summary>The sysfs speed attribute for a speed, as the kernel prints it.</summary>
    public static string FormatSpeed(UsbSpeed speed) => speed switch
    {
        UsbSpeed.Low => "1.5",
        UsbSpeed.Full or UsbSpeed.Unknown => "12",
        UsbSpeed.High or UsbSpeed.Wireless => "480",
        UsbSpeed.Super => "5000",
        UsbSpeed.SuperPlus => "10000",
        _ => "unknown",
    };

    /// <summary>Orders valid bus ids by bus number, root hub first, then port path numerically.</summary>
    public static int CompareBusIds(string a, string b)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        int byBus = BusNumberOf(a).CompareTo(BusNumberOf(b));
        if (byBus != 0)
        {
            return byBus;
        }

        ReadOnlySpan<char> pathA = PortPathOf(a);
        ReadOnlySpan<char> pathB = PortPathOf(b);
        while (!pathA.IsEmpty && !pathB.IsEmpty)
        {
            int byPort = NextPort(ref pathA).CompareTo(NextPort(ref pathB));
            if (byPort != 0)
            {
                return byPort;
            }
        }

        return pathA.Length.CompareTo(pathB.Length);
    }

    /// <summary>
    /// The descriptors the kernel read from the device at enumeration (sysfs "descriptors": the device
    /// descriptor, then each configuration's set, as usbfs's read() gives them), or empty if it is not there.
    /// </summary>
    public static byte[] ReadDescriptors(string sysfsRoot, string busId)
    {
        ArgumentNullException.ThrowIfNull(sysfsRoot);
        if (!IsValidBusId(busId))
        {
            return [];
        }
        // Read to the end, not to the size stat reports: sysfs gives this binary attribute its largest
        // possible size (18 + 65535 bytes), far beyond what it holds, and File.ReadAllBytes would take the
        // early end for a truncated file (EndOfStreamException).
        const int MaxLength = 18 + (8 * 65535);
        try
        {
            using var stream = new FileStream(Path.Combine(DevicesDirectory(sysfsRoot), busId, "descriptors"), FileMode.Open, FileAccess.Read, FileShare.ReadWrite, bufferSize: 0);
            byte[] buffer = new byte[4096];
            int length = 0;
            while (true)
            {
                if (length == buffer.Length)
                {
                    if (buffer.Length >= MaxLength)
                    {
                        break;
                    }
                    Array.Resize(ref buffer, Math.Min(MaxLength, buffer.Length * 2));
                }
                int n = stream.Read(buffer, length, buffer.Length - length);
                if (n == 0)
                {
                    break;
                }
                length += n;
            }
            return buffer[..length];
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return [];
        }
    }

    private static string DevicesDirectory(string sysfsRoot) => Path.Combine(sysfsRoot, "bus", "usb", "devices");

    private static UsbDeviceInfo? ReadDevice(string sysfsRoot, string busId)
    {
        string directory = Path.Combine(DevicesDirectory(sysfsRoot), busId);
        try
        {
            if (!TryReadNumber(directory, "busnum", NumberStyles.None, out int busNum)
                || !TryReadNumber(directory, "devnum", NumberStyles.None, out int devNum)
                || !TryReadNumber(directory, "idVendor", NumberStyles.AllowHexSpecifier, out int vendorId)
                || !TryReadNumber(directory, "idProduct", NumberStyles.AllowHexSpecifier, out int productId)
                || !TryReadNumber(directory, "bDeviceClass", NumberStyles.AllowHexSpecifier, out int deviceClass))
            {
                return null;
            }

            if (!TryReadNumber(directory, "maxchild", NumberStyles.None, out int maxChild))
            {
                maxChild = 0;
            }

            return new UsbDeviceInfo(
                busId,
                busNum,
                devNum,
                (ushort)vendorId,
                (ushort)productId,
                (byte)deviceClass,
                ParseSpeed(ReadAttribute(directory, "speed")),
                maxChild,
                ReadAttribute(directory, "manufacturer"),
                ReadAttribute(directory, "product"),
                ReadAttribute(directory, "serial"));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private static bool TryReadNumber(string directory, string name, NumberStyles style, out int value)
    {
        value = 0;
        string? text = ReadAttribute(directory, name);
        return text is not null
            && int.TryParse(text.AsSpan().Trim(), style, CultureInfo.InvariantCulture, out value)
            && value >= 0
            && (style != NumberStyles.AllowHexSpecifier || value <= 0xFFFF);
    }

    // Attribute text without the kernel's trailing newline; null if the file is absent.
    private static string? ReadAttribute(string directory, string name)
    {
        try
        {
            string text = File.ReadAllText(Path.Combine(directory, name));
            return text.EndsWith('\n') ? text[..^1] : text;
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            return null;
        }
    }

    private static bool IsNumber(ReadOnlySpan<char> text, int max)
    {
        if (text.IsEmpty || text.Length > 3 || text[0] == '0')
        {
            return false;
        }

        int value = 0;
        foreach (char c in text)
        {
            if (!char.IsAsciiDigit(c))
            {
                return false;
            }

            value = (value * 10) + (c - '0');
        }

        return value <= max;
    }

    private static int BusNumberOf(string busId)
    {
        ReadOnlySpan<char> id = busId;
        ReadOnlySpan<char> digits = id.StartsWith("usb", StringComparison.Ordinal) ? id[3..] : id[..Math.Max(0, id.IndexOf('-'))];
        return int.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out int bus) ? bus : int.MaxValue;
    }

    private static ReadOnlySpan<char> PortPathOf(string busId)
    {
        int dash = busId.IndexOf('-', StringComparison.Ordinal);
        return busId.StartsWith("usb", StringComparison.Ordinal) || dash < 0 ? [] : busId.AsSpan(dash + 1);
    }

    private static int NextPort(ref ReadOnlySpan<char> path)
    {
        int dot = path.IndexOf('.');
        ReadOnlySpan<char> port = dot < 0 ? path : path[..dot];
        path = dot < 0 ? [] : path[(dot + 1)..];
        return int.TryParse(port, NumberStyles.None, CultureInfo.InvariantCulture, out int value) ? value : int.MaxValue;
    }
}
