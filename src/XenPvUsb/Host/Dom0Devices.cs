using System.Globalization;

namespace XenPvUsb.Host;

/// <summary>
/// The USB devices dom0 itself needs, which broad assignment rules must not take: its console input (HID
/// keyboards and mice bound to a dom0 driver: boot-protocol keyboard or mouse interfaces, or any HID interface
/// with an input device under it) and the disks its system is mounted from (/, /boot, /boot/efi, /usr, /var,
/// through device-mapper and md layers to the USB device under them).
/// </summary>
public static class Dom0Devices
{
    /// <summary>The mount points whose disks dom0 cannot lose.</summary>
    public static readonly IReadOnlyList<string> SystemMountPoints = ["/", "/boot", "/boot/efi", "/usr", "/var"];

    private const byte HidClass = 3;

    /// <summary>Bus ids of the devices dom0 needs, with why (for the log).</summary>
    public static IReadOnlyDictionary<string, string> Detect(string sysfsRoot = "/sys", string mountInfoPath = "/proc/self/mountinfo")
    {
        var needed = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (Usb.UsbDeviceInfo dev in UsbSysfs.Enumerate(sysfsRoot))
        {
            if (!dev.IsRootHub && IsConsoleInput(sysfsRoot, dev.BusId) is { } what)
            {
                needed[dev.BusId] = $"dom0's {what}";
            }
        }
        foreach ((string mountPoint, string devNumber) in SystemMounts(mountInfoPath))
        {
            foreach (string busId in UsbDevicesUnderBlock(sysfsRoot, devNumber))
            {
                needed.TryAdd(busId, $"dom0's disk for {mountPoint}");
            }
        }
        return needed;
    }

    /// <summary>"keyboard", "mouse" or "input device" if the device has a HID interface dom0 drives as one; else null.</summary>
    private static string? IsConsoleInput(string sysfsRoot, string busId)
    {
        foreach (UsbInterfaceInfo i in UsbSysfs.ReadInterfaces(sysfsRoot, busId))
        {
            if (i.InterfaceClass != HidClass || i.Driver is null || i.Driver == "usbfs")
            {
                continue;
            }
            if (i.SubClass == 1 && i.Protocol == 1)
            {
                return "keyboard";
            }
            if (i.SubClass == 1 && i.Protocol == 2)
            {
                return "mouse";
            }
            int configuration = UsbSysfs.ReadConfigurationValue(sysfsRoot, busId) ?? 0;
            string dir = Path.Combine(sysfsRoot, "bus", "usb", "devices", string.Create(CultureInfo.InvariantCulture, $"{busId}:{configuration}.{i.Number}"));
            if (HasInputDevice(dir))
            {
                return "input device";
            }
        }
        return null;
    }

    // usbhid puts the HID device under the interface (0003:VVVV:PPPP.NNNN), and its input devices under that.
    private static bool HasInputDevice(string interfaceDirectory)
    {
        try
        {
            foreach (string child in Directory.EnumerateDirectories(interfaceDirectory))
            {
                if (Directory.Exists(Path.Combine(child, "input")))
                {
                    return true;
                }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
        return false;
    }

    /// <summary>(mount point, "major:minor") of the system mounts in a mountinfo file (proc(5)).</summary>
    public static IEnumerable<(string MountPoint, string Device)> SystemMounts(string mountInfoPath)
    {
        string[] lines;
        try
        {
            lines = File.ReadAllLines(mountInfoPath);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            yield break;
        }
        foreach (string line in lines)
        {
            // 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
            string[] f = line.Split(' ');
            if (f.Length < 5 || !SystemMountPoints.Contains(f[4]) || f[2].Split(':') is not [{ } maj, { } min]
                || !int.TryParse(maj, NumberStyles.None, CultureInfo.InvariantCulture, out int major) || major == 0
                || !int.TryParse(min, NumberStyles.None, CultureInfo.InvariantCulture, out _))
            {
                continue; // major 0: no block device (tmpfs, overlay, btrfs subvolumes without one)
            }
            yield return (f[4], f[2]);
        }
    }

    /// <summary>The USB devices a block device (major:minor) sits on, through its slaves (dm, md) recursively.</summary>
    public static IReadOnlyCollection<string> UsbDevicesUnderBlock(string sysfsRoot, string devNumber)
    {
        var found = new HashSet<string>(StringComparer.Ordinal);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var pending = new Stack<string>();
        if (Resolve(Path.Combine(sysfsRoot, "dev", "block", devNumber)) is { } start)
        {
            pending.Push(start);
        }
        while (pending.Count > 0 && seen.Count < 64)
        {
            string dir = pending.Pop();
            if (!seen.Add(dir))
            {
                continue;
            }
            if (UsbAncestor(dir) is { } busId)
            {
                found.Add(busId);
            }
            // A partition's slaves are its disk's; a dm or md device lists the devices it is made of.
            foreach (string candidate in new[] { Path.Combine(dir, "slaves"), Path.Combine(Path.GetDirectoryName(dir) ?? dir, "slaves") })
            {
                try
                {
                    if (Directory.Exists(candidate))
                    {
                        foreach (string slave in Directory.EnumerateFileSystemEntries(candidate))
                        {
                            if (Resolve(slave) is { } s)
                            {
                                pending.Push(s);
                            }
                        }
                    }
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                }
            }
        }
        return found;
    }

    // The nearest directory above a block device that is a USB device (named by a bus id, with a busnum attribute).
    private static string? UsbAncestor(string directory)
    {
        for (string? d = directory; !string.IsNullOrEmpty(d); d = Path.GetDirectoryName(d))
        {
            string name = Path.GetFileName(d);
            if (UsbSysfs.IsValidBusId(name) && !name.StartsWith("usb", StringComparison.Ordinal) && File.Exists(Path.Combine(d, "busnum")))
            {
                return name;
            }
        }
        return null;
    }

    private static string? Resolve(string path)
    {
        try
        {
            var info = new DirectoryInfo(path);
            FileSystemInfo? target = info.ResolveLinkTarget(returnFinalTarget: true);
            string resolved = target?.FullName ?? info.FullName;
            return Directory.Exists(resolved) ? Path.TrimEndingDirectorySeparator(resolved) : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }
}
