using XenPvUsb.Host;
using XenPvUsb.Simulation.Devices;
using XenPvUsb.Usb;

namespace XenPvUsb.Tests.Devices;

[TestFixture]
public sealed class UsbSysfsTests
{
    private static readonly string[] s_expectedOrder = ["usb1", "1-1", "1-2", "1-2.4", "usb2", "2-3"];
    private static readonly string[] s_passThrough = ["1-1", "1-2.4", "2-3"];
    private static readonly string[] s_rootHubs = ["usb1", "usb2"];

    private TempDirectory _temp = null!;
    private string _sysfs = null!;
    private EmulatedUsbHost _host = null!;

    [SetUp]
    public void SetUp()
    {
        _temp = new TempDirectory();
        _sysfs = _temp.File("sys");
        _host = new EmulatedUsbHost(_sysfs);
        string image = _temp.File("stick.img");
        StickImage.Create(image, 1024 * 1024, 1);
        _host.Plug("1-1", new MassStorageDevice(image));
        _host.Plug("1-2", new EmulatedHub());
        _host.Plug("1-2.4", new HidKeyboardDevice(UsbSpeed.Low));
        _host.Plug("2-3", new HidKeyboardDevice());
    }

    [TearDown]
    public void TearDown()
    {
        _host.Dispose();
        _temp.Dispose();
    }

    [Test]
    public void ReadDescriptors_ReadsToTheEnd_WhateverTheSize()
    {
        byte[] stick = UsbSysfs.ReadDescriptors(_sysfs, "1-1");
        Assert.That(stick, Has.Length.EqualTo(18 + 32), "device descriptor and the configuration set");
        Assert.That((stick[1], stick[18 + 1]), Is.EqualTo(((byte)1, (byte)2)));
        // Longer than the first read: the loop goes on to the end (sysfs reports 18 + 65535 bytes for every
        // device, which File.ReadAllBytes would take for a truncated file).
        byte[] big = new byte[10_000];
        new Random(3).NextBytes(big);
        File.WriteAllBytes(Path.Combine(_sysfs, "bus", "usb", "devices", "2-3", "descriptors"), big);
        Assert.That(UsbSysfs.ReadDescriptors(_sysfs, "2-3"), Is.EqualTo(big));
        Assert.That(UsbSysfs.ReadDescriptors(_sysfs, "1-9"), Is.Empty, "no such device");
        Assert.That(UsbSysfs.ReadDescriptors(_sysfs, "../etc"), Is.Empty, "not a bus id");
    }

    [Test]
    public void Mirror_WritesDeviceAttributesInKernelFormats()
    {
        Assert.That(Attribute("1-1", "busnum"), Is.EqualTo("1\n"));
        Assert.That(Attribute("1-1", "devnum"), Is.EqualTo("2\n"));
        Assert.That(Attribute("1-1", "devpath"), Is.EqualTo("1\n"));
        Assert.That(Attribute("1-1", "idVendor"), Is.EqualTo("1209\n"));
        Assert.That(Attribute("1-1", "idProduct"), Is.EqualTo("5a01\n"));
        Assert.That(Attribute("1-1", "bcdDevice"), Is.EqualTo("0100\n"));
        Assert.That(Attribute("1-1", "bDeviceClass"), Is.EqualTo("00\n"));
        Assert.That(Attribute("1-1", "bDeviceSubClass"), Is.EqualTo("00\n"));
        Assert.That(Attribute("1-1", "bDeviceProtocol"), Is.EqualTo("00\n"));
        Assert.That(Attribute("1-1", "speed"), Is.EqualTo("480\n"));
        Assert.That(Attribute("1-1", "maxchild"), Is.EqualTo("0\n"));
        Assert.That(Attribute("1-1", "version"), Is.EqualTo(" 2.00\n"));
        Assert.That(Attribute("1-1", "manufacturer"), Is.EqualTo("XenPvUsb\n"));
        Assert.That(Attribute("1-1", "product"), Is.EqualTo("Emulated Stick\n"));
        Assert.That(Attribute("1-1", "serial"), Is.EqualTo("XPU0001\n"));
        Assert.That(Attribute("1-1", "bNumConfigurations"), Is.EqualTo("1\n"));
        Assert.That(Attribute("1-1", "bConfigurationValue"), Is.EqualTo("1\n"));
        Assert.That(Attribute("1-1", "bNumInterfaces"), Is.EqualTo(" 1\n"));
        Assert.That(Attribute("1-1", "bmAttributes"), Is.EqualTo("80\n"));
        Assert.That(Attribute("1-1", "bMaxPower"), Is.EqualTo("100mA\n"));
        Assert.That(Attribute("1-2.4", "devpath"), Is.EqualTo("2.4\n"));
        Assert.That(Attribute("1-2.4", "speed"), Is.EqualTo("1.5\n"));
        Assert.That(Attribute("2-3", "speed"), Is.EqualTo("12\n"));
        Assert.That(Attribute("1-2", "bDeviceClass"), Is.EqualTo("09\n"));
        Assert.That(Attribute("1-2", "maxchild"), Is.EqualTo("4\n"));
        Assert.That(File.Exists(AttributePath("1-2", "serial")), Is.False, "absent string, absent file");
    }

    [Test]
    public void Mirror_WritesRootHubsAndInterfaces()
    {
        Assert.That(Attribute("usb1", "bDeviceClass"), Is.EqualTo("09\n"));
        Assert.That(Attribute("usb1", "devnum"), Is.EqualTo("1\n"));
        Assert.That(Attribute("usb1", "devpath"), Is.EqualTo("0\n"));
        Assert.That(Attribute("usb2", "busnum"), Is.EqualTo("2\n"));
        Assert.That(Attribute("1-1:1.0", "bInterfaceClass"), Is.EqualTo("08\n"));
        Assert.That(Attribute("1-1:1.0", "bInterfaceProtocol"), Is.EqualTo("50\n"));
        Assert.That(Attribute("1-1:1.0", "bNumEndpoints"), Is.EqualTo("02\n"));
        Assert.That(Attribute("1-1:1.0", "modalias"), Is.EqualTo("usb:v1209p5A01d0100dc00dsc00dp00ic08isc06ip50in00\n"));
        Assert.That(Attribute("1-1", "uevent"), Does.Contain("DEVTYPE=usb_device\n").And.Contain("BUSNUM=001\nDEVNUM=002\n"));
        Assert.That(Directory.Exists(Path.Combine(_sysfs, "bus", "usb", "devices", "usb1-0:1.0")), Is.False);
        Assert.That(Directory.Exists(Path.Combine(_sysfs, "bus", "usb", "devices", "1-0:1.0")), Is.True);
    }

    [Test]
    public void Mirror_DescriptorsFileHoldsDeviceAndConfigurationDescriptors()
    {
        var device = (MassStorageDevice)_host.GetDevice("1-1")!;
        byte[] descriptors = File.ReadAllBytes(AttributePath("1-1", "descriptors"));

        Assert.That(descriptors, Is.EqualTo(device.DeviceDescriptor.ToArray().Concat(device.ConfigurationDescriptor.ToArray()).ToArray()));
    }

    [Test]
    public void Enumerate_ReadsBackExactlyWhatTheEmulatedHostHolds()
    {
        IReadOnlyList<UsbDeviceInfo> fromSysfs = UsbSysfs.Enumerate(_sysfs);

        Assert.That(fromSysfs, Is.EqualTo(_host.Enumerate()));
        Assert.That(fromSysfs.Select(d => d.BusId), Is.EqualTo(s_expectedOrder));
    }

    [Test]
    public void HubsAndRootHubs_AreIdentified()
    {
        IReadOnlyList<UsbDeviceInfo> devices = UsbSysfs.Enumerate(_sysfs);
        string[] passThrough = [.. devices.Where(d => !d.IsHub).Select(d => d.BusId)];

        Assert.That(passThrough, Is.EqualTo(s_passThrough));
        Assert.That(devices.Where(d => d.IsRootHub).Select(d => d.BusId), Is.EqualTo(s_rootHubs));
        Assert.That(devices.Single(d => d.BusId == "1-2").MaxChild, Is.EqualTo(4));
    }

    [Test]
    public void Read_AfterUnplug_ReturnsNull()
    {
        Assert.That(UsbSysfs.Read(_sysfs, "1-1"), Is.Not.Null);

        _host.Unplug("1-1");

        Assert.That(UsbSysfs.Read(_sysfs, "1-1"), Is.Null);
        Assert.That(UsbSysfs.Enumerate(_sysfs).Select(d => d.BusId), Does.Not.Contain("1-1"));
        Assert.That(Directory.Exists(Path.Combine(_sysfs, "bus", "usb", "devices", "1-1:1.0")), Is.False);
    }

    [Test]
    public void FindByAddress_MapsBusAndDevnumToBusId()
    {
        UsbDeviceInfo? keyboard = UsbSysfs.FindByAddress(_sysfs, 1, 4);

        Assert.That(keyboard?.BusId, Is.EqualTo("1-2.4"));
        Assert.That(UsbSysfs.FindByAddress(_sysfs, 2, 1)?.BusId, Is.EqualTo("usb2"));
        Assert.That(UsbSysfs.FindByAddress(_sysfs, 1, 99), Is.Null);
    }

    [Test]
    public void Enumerate_SkipsHalfWrittenAndForeignEntries()
    {
        string devices = Path.Combine(_sysfs, "bus", "usb", "devices");
        Directory.CreateDirectory(Path.Combine(devices, "3-1"));
        File.WriteAllText(Path.Combine(devices, "3-1", "busnum"), "3\n");
        Directory.CreateDirectory(Path.Combine(devices, "not-a-device"));
        Directory.CreateDirectory(Path.Combine(devices, "4-2"));
        foreach ((string name, string value) in new[] { ("busnum", "4"), ("devnum", "7"), ("idVendor", "046d"), ("idProduct", "c52b"), ("bDeviceClass", "00") })
        {
            File.WriteAllText(Path.Combine(devices, "4-2", name), value + "\n");
        }

        IReadOnlyList<UsbDeviceInfo> found = UsbSysfs.Enumerate(_sysfs);

        Assert.That(found.Select(d => d.BusId), Does.Not.Contain("3-1").And.Not.Contain("not-a-device"));
        UsbDeviceInfo minimal = found.Single(d => d.BusId == "4-2");
        Assert.That(minimal, Is.EqualTo(new UsbDeviceInfo("4-2", 4, 7, 0x046D, 0xC52B, 0, UsbSpeed.Unknown, 0, null, null, null)));
    }

    [Test]
    public void Enumerate_MissingSysfs_IsEmpty() =>
        Assert.That(UsbSysfs.Enumerate(_temp.File("nowhere")), Is.Empty);

    [Test]
    public void Read_InvalidBusId_Throws() =>
        Assert.That(() => UsbSysfs.Read(_sysfs, "../../etc"), Throws.ArgumentException);

    private string AttributePath(string busId, string name) => Path.Combine(_sysfs, "bus", "usb", "devices", busId, name);

    private string Attribute(string busId, string name) => File.ReadAllText(AttributePath(busId, name));
}
