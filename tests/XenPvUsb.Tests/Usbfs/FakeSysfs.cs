using System.Globalization;

namespace XenPvUsb.Tests.Usbfs;

/// <summary>Writes a minimal sysfs tree (host-interfaces.md §2.2–2.3) for one or more devices, the way the kernel formats it.</summary>
internal sealed class FakeSysfs : IDisposable
{
    public FakeSysfs()
    {
        Root = Path.Combine(Path.GetTempPath(), "xenpvusb-tests", "sysfs-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Devices);
    }

    public string Root { get; }

    public string Devices => Path.Combine(Root, "bus", "usb", "devices");

    /// <summary>Adds a device; <paramref name="bound"/>: bound to the generic "usb" driver, as every configured device is.</summary>
    public void AddDevice(string busId, int busNum, int devNum, int configuration = 1, string deviceClass = "00", int maxChild = 0, string speed = "480", bool bound = true)
    {
        string d = Path.Combine(Devices, busId);
        Directory.CreateDirectory(d);
        if (bound && !File.Exists(Path.Combine(d, "driver")))
        {
            string target = Path.Combine(Root, "bus", "usb", "drivers", "usb");
            Directory.CreateDirectory(target);
            File.CreateSymbolicLink(Path.Combine(d, "driver"), target);
        }
        Write(d, "busnum", busNum.ToString(CultureInfo.InvariantCulture));
        Write(d, "devnum", devNum.ToString(CultureInfo.InvariantCulture));
        Write(d, "idVendor", "1209");
        Write(d, "idProduct", "5a01");
        Write(d, "bDeviceClass", deviceClass);
        Write(d, "speed", speed);
        Write(d, "maxchild", maxChild.ToString(CultureInfo.InvariantCulture));
        SetConfiguration(busId, configuration);
    }

    /// <summary>Sets bConfigurationValue (0 = unconfigured: the kernel prints an empty line).</summary>
    public void SetConfiguration(string busId, int configuration) =>
        Write(Path.Combine(Devices, busId), "bConfigurationValue", configuration == 0 ? "" : configuration.ToString(CultureInfo.InvariantCulture));

    /// <summary>Adds interface "&lt;busid&gt;:&lt;config&gt;.&lt;n&gt;", as a directory under the device and a symlink in bus/usb/devices like the kernel.</summary>
    public void AddInterface(string busId, int configuration, int number, string? driver = null, int alternate = 0, string interfaceClass = "08")
    {
        string name = string.Create(CultureInfo.InvariantCulture, $"{busId}:{configuration}.{number}");
        string d = Path.Combine(Devices, busId, name);
        Directory.CreateDirectory(d);
        Write(d, "bInterfaceNumber", number.ToString("x2", CultureInfo.InvariantCulture));
        Write(d, "bAlternateSetting", alternate.ToString(CultureInfo.InvariantCulture).PadLeft(2));
        Write(d, "bInterfaceClass", interfaceClass);
        if (driver is not null)
        {
            string target = Path.Combine(Root, "bus", "usb", "drivers", driver);
            Directory.CreateDirectory(target);
            File.CreateSymbolicLink(Path.Combine(d, "driver"), target);
        }
        File.CreateSymbolicLink(Path.Combine(Devices, name), d);
    }

    /// <summary>Writes the "descriptors" attribute: a device descriptor, then one configuration descriptor with this bConfigurationValue.</summary>
    public void SetFirstConfigurationValue(string busId, byte value)
    {
        byte[] blob = new byte[18 + 9];
        blob[0] = 18;
        blob[1] = 1;
        blob[17] = 1;
        blob[18] = 9;
        blob[19] = 2;
        blob[20] = 9;
        blob[23] = value;
        File.WriteAllBytes(Path.Combine(Devices, busId, "descriptors"), blob);
    }

    /// <summary>The device is gone from sysfs (unplugged).</summary>
    public void RemoveDevice(string busId)
    {
        RemoveInterfaces(busId);
        Directory.Delete(Path.Combine(Devices, busId), recursive: true);
    }

    public void RemoveInterfaces(string busId)
    {
        foreach (string entry in Directory.GetFileSystemEntries(Devices, busId + ":*"))
        {
            File.Delete(entry);
        }
        foreach (string dir in Directory.GetDirectories(Path.Combine(Devices, busId), busId + ":*"))
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    private static void Write(string directory, string name, string value) => File.WriteAllText(Path.Combine(directory, name), value + "\n");
}
