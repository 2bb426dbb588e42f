using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using XenPvUsb.Host;
using XenPvUsb.Usb;

namespace XenPvUsb.Simulation.Devices;

/// <summary>
/// A simulated host USB world: root hubs usb1..usbN, emulated devices plugged at bus ids, devnum
/// assignment as Linux does it, and a sysfs-like mirror (<c>&lt;root&gt;/bus/usb/devices/&lt;busid&gt;</c>,
/// symlinks into <c>&lt;root&gt;/devices/...</c>, kernel attribute formats of host-interfaces.md §2.2)
/// that <see cref="UsbSysfs"/> reads exactly as it reads a real dom0.
/// </summary>
/// <remarks>
/// Like the kernel's generic driver, plugging a device selects its first configuration. The sysfs
/// mirror is written at plug time; later configuration changes made by the guest are not reflected.
/// Hotplug events and device unplug completions are raised outside the host lock.
/// </remarks>
public sealed class EmulatedUsbHost : IUsbHost, IDisposable
{
    /// <summary>Ports on each emulated root hub.</summary>
    public const int RootHubPorts = 8;

    private const int Enodev = 19;
    private const int Ebusy = 16;

    private readonly Lock _lock = new();
    private readonly string _sysfsRoot;
    private readonly int _busCount;
    private readonly Dictionary<string, PluggedDevice> _devices = new(StringComparer.Ordinal);
    private readonly bool[][] _devnumInUse;
    private readonly int[] _devnumNext;

    /// <param name="sysfsRoot">Directory to mirror sysfs into (created if missing); pass it to <see cref="UsbSysfs"/> as the root.</param>
    /// <param name="busCount">Number of buses (root hubs usb1..usbN).</param>
    public EmulatedUsbHost(string sysfsRoot, int busCount = 2)
    {
        ArgumentNullException.ThrowIfNull(sysfsRoot);
        ArgumentOutOfRangeException.ThrowIfLessThan(busCount, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(busCount, 999);
        _sysfsRoot = Path.GetFullPath(sysfsRoot);
        _busCount = busCount;
        _devnumInUse = new bool[busCount + 1][];
        _devnumNext = new int[busCount + 1];
        Directory.CreateDirectory(LinkDirectory);
        for (int bus = 1; bus <= busCount; bus++)
        {
            // The root hub takes devnum 1 (usb_alloc_dev/hcd register order).
            _devnumInUse[bus] = new bool[128];
            _devnumInUse[bus][1] = true;
            _devnumNext[bus] = 2;
            WriteRootHub(bus);
        }
    }

    public event Action<UsbHotplugEvent>? Hotplug;

    public string SysfsRoot => _sysfsRoot;

    private string LinkDirectory => Path.Combine(_sysfsRoot, "bus", "usb", "devices");

    /// <summary>
    /// Plugs <paramref name="device"/> at <paramref name="busId"/> ("1-2", or "1-1.3" behind a hub plugged
    /// at "1-1"), assigns its devnum, selects its configuration, writes its sysfs entry and raises
    /// <see cref="Hotplug"/>.
    /// </summary>
    public void Plug(string busId, EmulatedUsbDevice device)
    {
        ArgumentNullException.ThrowIfNull(device);
        if (!UsbSysfs.IsValidBusId(busId) || busId.StartsWith("usb", StringComparison.Ordinal))
        {
            throw new ArgumentException($"'{busId}' is not a device bus id.", nameof(busId));
        }

        int dash = busId.IndexOf('-', StringComparison.Ordinal);
        int bus = int.Parse(busId.AsSpan(0, dash), CultureInfo.InvariantCulture);
        string devpath = busId[(dash + 1)..];
        int lastDot = devpath.LastIndexOf('.');
        int port = int.Parse(devpath.AsSpan(lastDot + 1), CultureInfo.InvariantCulture);
        if (bus > _busCount)
        {
            throw new ArgumentException($"There is no bus {bus}.", nameof(busId));
        }

        lock (_lock)
        {
            if (_devices.ContainsKey(busId))
            {
                throw new InvalidOperationException($"A device is already plugged at {busId}.");
            }

            string parentDirectory;
            if (lastDot < 0)
            {
                if (port > RootHubPorts)
                {
                    throw new ArgumentException($"Root hub usb{bus} has {RootHubPorts} ports.", nameof(busId));
                }

                parentDirectory = RootHubDirectory(bus);
            }
            else
            {
                string parentId = busId[..(dash + 1 + lastDot)];
                if (!_devices.TryGetValue(parentId, out PluggedDevice? parent) || parent.Device.MaxChild < port)
                {
                    throw new InvalidOperationException($"No hub with a port {port} is plugged at {parentId}.");
                }

                parentDirectory = parent.Directory;
            }

            if (device.IsUnplugged || device.BusId.Length != 0)
            {
                throw new InvalidOperationException("The device is plugged elsewhere or was unplugged; create a new one.");
            }

            int devnum = AllocateDevnum(bus);
            var plugged = new PluggedDevice(device, bus, devnum, devpath, Path.Combine(parentDirectory, busId));
            device.BusId = busId;
            device.SetConfiguration(device.ConfigurationDescriptor[5]);
            _devices.Add(busId, plugged);
            WriteDevice(plugged);
        }

        Hotplug?.Invoke(new UsbHotplugEvent(busId, true));
    }

    /// <summary>
    /// Unplugs the device at <paramref name="busId"/> (and, for a hub, everything behind it first): its
    /// pending and later transfers complete with -ENODEV, its sysfs entry goes, and <see cref="Hotplug"/>
    /// is raised. Returns false if nothing was plugged there.
    /// </summary>
    public bool Unplug(string busId)
    {
        ArgumentNullException.ThrowIfNull(busId);
        var removed = new List<PluggedDevice>();
        lock (_lock)
        {
            if (!_devices.ContainsKey(busId))
            {
                return false;
            }

            string prefix = busId + ".";
            foreach (KeyValuePair<string, PluggedDevice> entry in _devices)
            {
                if (entry.Key == busId || entry.Key.StartsWith(prefix, StringComparison.Ordinal))
                {
                    removed.Add(entry.Value);
                }
            }

            // Deepest first, as the hub driver disconnects children before their hub.
            removed.Sort(static (a, b) => b.DevPath.Length.CompareTo(a.DevPath.Length));
            foreach (PluggedDevice plugged in removed)
            {
                _devices.Remove(plugged.Device.BusId);
                _devnumInUse[plugged.BusNum][plugged.DevNum] = false;
                RemoveDevice(plugged);
            }
        }

        foreach (PluggedDevice plugged in removed)
        {
            plugged.Device.Unplug();
            Hotplug?.Invoke(new UsbHotplugEvent(plugged.Device.BusId, false));
        }

        return true;
    }

    /// <summary>The emulated device plugged at <paramref name="busId"/>, or null.</summary>
    public EmulatedUsbDevice? GetDevice(string busId)
    {
        lock (_lock)
        {
            return _devices.TryGetValue(busId, out PluggedDevice? plugged) ? plugged.Device : null;
        }
    }

    public IReadOnlyList<UsbDeviceInfo> Enumerate()
    {
        var result = new List<UsbDeviceInfo>();
        lock (_lock)
        {
            for (int bus = 1; bus <= _busCount; bus++)
            {
                result.Add(RootHubInfo(bus));
            }

            foreach (PluggedDevice plugged in _devices.Values)
            {
                result.Add(plugged.ToInfo());
            }
        }

        result.Sort(static (a, b) => UsbSysfs.CompareBusIds(a.BusId, b.BusId));
        return result;
    }

    public UsbDeviceInfo? Find(string busId)
    {
        ArgumentNullException.ThrowIfNull(busId);
        if (busId.StartsWith("usb", StringComparison.Ordinal) && UsbSysfs.IsValidBusId(busId))
        {
            int bus = int.Parse(busId.AsSpan(3), CultureInfo.InvariantCulture);
            return bus <= _busCount ? RootHubInfo(bus) : null;
        }

        lock (_lock)
        {
            return _devices.TryGetValue(busId, out PluggedDevice? plugged) ? plugged.ToInfo() : null;
        }
    }

    /// <summary>No host drivers here: nothing to give back.</summary>
    public Task HandBackAsync(string busId) => Task.CompletedTask;

    /// <summary>Claims the device at <paramref name="busId"/>; disposing the returned device releases the claim.</summary>
    public IUsbHostDevice Open(string busId)
    {
        ArgumentNullException.ThrowIfNull(busId);
        EmulatedUsbDevice device;
        lock (_lock)
        {
            if (!_devices.TryGetValue(busId, out PluggedDevice? plugged))
            {
                throw new UsbDeviceException($"Open {busId}: no emulated device there (ENODEV)", Enodev);
            }

            device = plugged.Device;
        }

        if (!device.TryClaim())
        {
            if (device.IsUnplugged)
            {
                throw new UsbDeviceException($"Open {busId}: device gone (ENODEV)", Enodev);
            }

            throw new UsbDeviceException($"Open {busId}: already open (EBUSY)", Ebusy);
        }

        return device;
    }

    /// <summary>Unplugs every device (releasing image files); the root hubs stay in the mirror.</summary>
    public void Dispose()
    {
        string[] topLevel;
        lock (_lock)
        {
            topLevel = [.. _devices.Keys.Where(static id => !id.Contains('.', StringComparison.Ordinal))];
        }

        foreach (string busId in topLevel)
        {
            Unplug(busId);
        }
    }

    private static UsbDeviceInfo RootHubInfo(int bus) =>
        new($"usb{bus}", bus, 1, 0x1D6B, 0x0002, 0x09, UsbSpeed.High, RootHubPorts, "XenPvUsb emulated-hcd", "XenPvUsb Emulated Host Controller", $"xenpvusb-hcd.{bus}");

    private static string Hex2(int value) => value.ToString("x2", CultureInfo.InvariantCulture);

    private static string Hex4(int value) => value.ToString("x4", CultureInfo.InvariantCulture);

    private static string Decimal(int value) => value.ToString(CultureInfo.InvariantCulture);

    // bcdUSB as "%2x.%02x", e.g. " 2.00".
    private static string FormatVersion(ushort bcd) =>
        (bcd >> 8).ToString("x", CultureInfo.InvariantCulture).PadLeft(2) + "." + Hex2(bcd & 0xFF);

    private static void WriteAttribute(string directory, string name, string value) =>
        File.WriteAllText(Path.Combine(directory, name), value + "\n");

    private int AllocateDevnum(int bus)
    {
        // hub_port_connect/choose_devnum: next free number after the last one given, wrapping at 128.
        bool[] inUse = _devnumInUse[bus];
        int devnum = _devnumNext[bus];
        for (int tries = 0; tries < 127 && inUse[devnum]; tries++)
        {
            devnum = devnum >= 127 ? 1 : devnum + 1;
        }

        if (inUse[devnum])
        {
            throw new InvalidOperationException($"Bus {bus} has no free device number.");
        }

        inUse[devnum] = true;
        _devnumNext[bus] = devnum >= 127 ? 1 : devnum + 1;
        return devnum;
    }

    private string RootHubDirectory(int bus) =>
        Path.Combine(_sysfsRoot, "devices", "platform", $"xenpvusb-hcd.{bus - 1}", $"usb{bus}");

    private void WriteRootHub(int bus)
    {
        string directory = RootHubDirectory(bus);
        Directory.CreateDirectory(directory);
        UsbDeviceInfo info = RootHubInfo(bus);
        var attributes = new DeviceAttributes(
            bus, 1, "0", info.VendorId, info.ProductId, 0x0610, 0x09, 0x00, 0x01, 0x0200, 64, RootHubPorts, UsbSpeed.High, 1, 0xE0, 0, 1, 1, false);
        WriteDeviceAttributes(directory, attributes, info.Manufacturer, info.Product, info.Serial, []);
        string interfaceDirectory = Path.Combine(directory, $"{bus}-0:1.0");
        WriteInterface(interfaceDirectory, attributes, 0, 1, 0x09, 0x00, 0x00);
        Link(directory);
        Link(interfaceDirectory);
    }

    private void WriteDevice(PluggedDevice plugged)
    {
        EmulatedUsbDevice device = plugged.Device;
        ReadOnlySpan<byte> configuration = device.ConfigurationDescriptor;
        var attributes = new DeviceAttributes(
            plugged.BusNum,
            plugged.DevNum,
            plugged.DevPath,
            device.VendorId,
            device.ProductId,
            device.BcdDevice,
            device.DeviceClass,
            device.DeviceSubClass,
            device.DeviceProtocol,
            device.BcdUsb,
            device.MaxPacketSize0,
            device.MaxChild,
            device.Speed,
            configuration[5],
            configuration[7],
            configuration[8] * 2,
            configuration[4],
            device.NumConfigurations,
            true);
        Directory.CreateDirectory(plugged.Directory);
        byte[] descriptors = [.. device.DeviceDescriptor, .. configuration];
        WriteDeviceAttributes(plugged.Directory, attributes, device.Manufacturer, device.Product, device.Serial, descriptors);
        plugged.InterfaceDirectories.Clear();
        for (int i = configuration[0]; i + 1 < configuration.Length; i += configuration[i])
        {
            if (configuration[i + 1] == UsbDescriptors.InterfaceType && configuration[i + 3] == 0)
            {
                string name = string.Create(CultureInfo.InvariantCulture, $"{device.BusId}:{configuration[5]}.{configuration[i + 2]}");
                string interfaceDirectory = Path.Combine(plugged.Directory, name);
                WriteInterface(interfaceDirectory, attributes, configuration[i + 2], configuration[i + 4], configuration[i + 5], configuration[i + 6], configuration[i + 7]);
                plugged.InterfaceDirectories.Add(interfaceDirectory);
            }
        }

        // The bus/usb/devices links come last, so a concurrent reader never sees a half-written entry.
        foreach (string interfaceDirectory in plugged.InterfaceDirectories)
        {
            Link(interfaceDirectory);
        }

        Link(plugged.Directory);
    }

    private void RemoveDevice(PluggedDevice plugged)
    {
        File.Delete(Path.Combine(LinkDirectory, Path.GetFileName(plugged.Directory)));
        foreach (string interfaceDirectory in plugged.InterfaceDirectories)
        {
            File.Delete(Path.Combine(LinkDirectory, Path.GetFileName(interfaceDirectory)));
        }

        if (Directory.Exists(plugged.Directory))
        {
            Directory.Delete(plugged.Directory, recursive: true);
        }
    }

    private void Link(string target)
    {
        string link = Path.Combine(LinkDirectory, Path.GetFileName(target));
        File.Delete(link);
        File.CreateSymbolicLink(link, Path.GetRelativePath(LinkDirectory, target));
    }

    private static void WriteDeviceAttributes(string directory, DeviceAttributes a, string? manufacturer, string? product, string? serial, byte[] descriptors)
    {
        WriteAttribute(directory, "busnum", Decimal(a.BusNum));
        WriteAttribute(directory, "devnum", Decimal(a.DevNum));
        WriteAttribute(directory, "devpath", a.DevPath);
        WriteAttribute(directory, "idVendor", Hex4(a.VendorId));
        WriteAttribute(directory, "idProduct", Hex4(a.ProductId));
        WriteAttribute(directory, "bcdDevice", Hex4(a.BcdDevice));
        WriteAttribute(directory, "bDeviceClass", Hex2(a.DeviceClass));
        WriteAttribute(directory, "bDeviceSubClass", Hex2(a.DeviceSubClass));
        WriteAttribute(directory, "bDeviceProtocol", Hex2(a.DeviceProtocol));
        WriteAttribute(directory, "bMaxPacketSize0", Decimal(a.MaxPacketSize0));
        WriteAttribute(directory, "bNumConfigurations", Decimal(a.NumConfigurations));
        WriteAttribute(directory, "bConfigurationValue", Decimal(a.ConfigurationValue));
        WriteAttribute(directory, "bNumInterfaces", Decimal(a.NumInterfaces).PadLeft(2));
        WriteAttribute(directory, "bmAttributes", a.ConfigurationAttributes.ToString("x", CultureInfo.InvariantCulture).PadLeft(2));
        WriteAttribute(directory, "bMaxPower", Decimal(a.MaxPowerMilliamps) + "mA");
        WriteAttribute(directory, "speed", UsbSysfs.FormatSpeed(a.Speed));
        WriteAttribute(directory, "version", FormatVersion(a.BcdUsb));
        WriteAttribute(directory, "maxchild", Decimal(a.MaxChild));
        WriteAttribute(directory, "authorized", "1");
        WriteAttribute(directory, "removable", a.Removable ? "removable" : "unknown");
        WriteAttribute(directory, "quirks", "0x0");
        if (manufacturer is not null)
        {
            WriteAttribute(directory, "manufacturer", manufacturer);
        }

        if (product is not null)
        {
            WriteAttribute(directory, "product", product);
        }

        if (serial is not null)
        {
            WriteAttribute(directory, "serial", serial);
        }

        File.WriteAllBytes(Path.Combine(directory, "descriptors"), descriptors);
        var uevent = new StringBuilder();
        uevent.Append(CultureInfo.InvariantCulture, $"MAJOR=189\nMINOR={((a.BusNum - 1) * 128) + a.DevNum - 1}\n");
        uevent.Append(CultureInfo.InvariantCulture, $"DEVNAME=bus/usb/{a.BusNum:D3}/{a.DevNum:D3}\nDEVTYPE=usb_device\nDRIVER=usb\n");
        uevent.Append(CultureInfo.InvariantCulture, $"PRODUCT={a.VendorId:x}/{a.ProductId:x}/{a.BcdDevice:x}\n");
        uevent.Append(CultureInfo.InvariantCulture, $"TYPE={a.DeviceClass}/{a.DeviceSubClass}/{a.DeviceProtocol}\n");
        uevent.Append(CultureInfo.InvariantCulture, $"BUSNUM={a.BusNum:D3}\nDEVNUM={a.DevNum:D3}\n");
        File.WriteAllText(Path.Combine(directory, "uevent"), uevent.ToString());
    }

    private static void WriteInterface(string directory, DeviceAttributes a, int number, int numEndpoints, byte interfaceClass, byte subClass, byte protocol)
    {
        Directory.CreateDirectory(directory);
        WriteAttribute(directory, "bInterfaceNumber", Hex2(number));
        WriteAttribute(directory, "bAlternateSetting", " 0");
        WriteAttribute(directory, "bNumEndpoints", Hex2(numEndpoints));
        WriteAttribute(directory, "bInterfaceClass", Hex2(interfaceClass));
        WriteAttribute(directory, "bInterfaceSubClass", Hex2(subClass));
        WriteAttribute(directory, "bInterfaceProtocol", Hex2(protocol));
        string modalias = string.Create(
            CultureInfo.InvariantCulture,
            $"usb:v{a.VendorId:X4}p{a.ProductId:X4}d{a.BcdDevice:X4}dc{a.DeviceClass:X2}dsc{a.DeviceSubClass:X2}dp{a.DeviceProtocol:X2}ic{interfaceClass:X2}isc{subClass:X2}ip{protocol:X2}in{number:X2}");
        WriteAttribute(directory, "modalias", modalias);
        File.WriteAllText(
            Path.Combine(directory, "uevent"),
            string.Create(
                CultureInfo.InvariantCulture,
                $"DEVTYPE=usb_interface\nPRODUCT={a.VendorId:x}/{a.ProductId:x}/{a.BcdDevice:x}\nTYPE={a.DeviceClass}/{a.DeviceSubClass}/{a.DeviceProtocol}\nINTERFACE={interfaceClass}/{subClass}/{protocol}\nMODALIAS={modalias}\n"));
    }

    private sealed record DeviceAttributes(
        int BusNum,
        int DevNum,
        string DevPath,
        ushort VendorId,
        ushort ProductId,
        ushort BcdDevice,
        byte DeviceClass,
        byte DeviceSubClass,
        byte DeviceProtocol,
        ushort BcdUsb,
        int MaxPacketSize0,
        int MaxChild,
        UsbSpeed Speed,
        int ConfigurationValue,
        int ConfigurationAttributes,
        int MaxPowerMilliamps,
        int NumInterfaces,
        int NumConfigurations,
        bool Removable);

    private sealed record PluggedDevice(EmulatedUsbDevice Device, int BusNum, int DevNum, string DevPath, string Directory)
    {
        public List<string> InterfaceDirectories { get; } = [];

        public UsbDeviceInfo ToInfo() => new(
            Device.BusId, BusNum, DevNum, Device.VendorId, Device.ProductId, Device.DeviceClass, Device.Speed,
            Device.MaxChild, Device.Manufacturer, Device.Product, Device.Serial);
    }
}
