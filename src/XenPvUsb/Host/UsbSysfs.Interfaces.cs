using System.Globalization;

namespace XenPvUsb.Host;

public static partial class UsbSysfs
{
    /// <summary>
    /// bConfigurationValue of the device at <paramref name="busId"/>: the active configuration, 0 if
    /// the device is unconfigured (the attribute is empty then), null if the device is not there.
    /// </summary>
    public static int? ReadConfigurationValue(string sysfsRoot, string busId)
    {
        string directory = DeviceDirectory(sysfsRoot, busId);
        try
        {
            string? text = ReadAttribute(directory, "bConfigurationValue");
            if (text is null)
            {
                return null;
            }
            return int.TryParse(text.AsSpan().Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out int value) ? value : 0;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>
    /// The interfaces of the device's active configuration, by number: sysfs entries named
    /// "&lt;busid&gt;:&lt;config&gt;.&lt;ifnum&gt;" (§2.1), which exist only while the device is configured.
    /// Empty if it is unconfigured or gone.
    /// </summary>
    public static IReadOnlyList<UsbInterfaceInfo> ReadInterfaces(string sysfsRoot, string busId)
    {
        int? configuration = ReadConfigurationValue(sysfsRoot, busId);
        if (configuration is null or 0)
        {
            return [];
        }

        string prefix = string.Create(CultureInfo.InvariantCulture, $"{busId}:{configuration}.");
        var interfaces = new List<UsbInterfaceInfo>();
        try
        {
            foreach (string entry in Directory.EnumerateFileSystemEntries(DevicesDirectory(sysfsRoot), prefix + "*"))
            {
                if (ReadInterface(entry) is { } info && !interfaces.Exists(i => i.Number == info.Number))
                {
                    interfaces.Add(info);
                }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return [];
        }

        interfaces.Sort(static (a, b) => a.Number.CompareTo(b.Number));
        return interfaces;
    }

    private static string DeviceDirectory(string sysfsRoot, string busId)
    {
        ArgumentNullException.ThrowIfNull(sysfsRoot);
        if (!IsValidBusId(busId))
        {
            throw new ArgumentException($"Invalid USB bus id '{busId}'.", nameof(busId));
        }
        return Path.Combine(DevicesDirectory(sysfsRoot), busId);
    }

    private static UsbInterfaceInfo? ReadInterface(string directory)
    {
        try
        {
            if (!TryReadNumber(directory, "bInterfaceNumber", NumberStyles.AllowHexSpecifier, out int number) || number > 255)
            {
                return null;
            }
            if (!TryReadNumber(directory, "bAlternateSetting", NumberStyles.None, out int alternate))
            {
                alternate = 0;
            }
            if (!TryReadNumber(directory, "bInterfaceClass", NumberStyles.AllowHexSpecifier, out int interfaceClass))
            {
                interfaceClass = 0;
            }
            TryReadNumber(directory, "bInterfaceSubClass", NumberStyles.AllowHexSpecifier, out int subClass);
            TryReadNumber(directory, "bInterfaceProtocol", NumberStyles.AllowHexSpecifier, out int protocol);
            return new UsbInterfaceInfo(number, alternate, (byte)interfaceClass, ReadDriverName(directory), (byte)subClass, (byte)protocol);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    // "driver" is a symlink to /sys/bus/usb/drivers/<name>; absent when nothing is bound.
    private static string? ReadDriverName(string directory)
    {
        string? target = new FileInfo(Path.Combine(directory, "driver")).LinkTarget;
        return target is null ? null : Path.GetFileName(target.TrimEnd('/'));
    }
}
