using XenPvUsb.Host;

namespace XenPvUsb.Tests.Usbfs;

[TestFixture]
public sealed class UsbSysfsInterfaceTests
{
    private FakeSysfs _sysfs = null!;

    [SetUp]
    public void SetUp() => _sysfs = new FakeSysfs();

    [TearDown]
    public void TearDown() => _sysfs.Dispose();

    [Test]
    public void ActiveConfigurationsInterfaces_WithTheirDrivers_ByNumber()
    {
        _sysfs.AddDevice("1-2", 1, 5, configuration: 2);
        _sysfs.AddInterface("1-2", 2, 10, driver: "usb-storage", alternate: 1, interfaceClass: "08");
        _sysfs.AddInterface("1-2", 2, 0, driver: "usbfs", interfaceClass: "ff");
        _sysfs.AddInterface("1-2", 2, 3);
        _sysfs.AddDevice("1-2.1", 1, 6);
        _sysfs.AddInterface("1-2.1", 1, 0, driver: "usbhid");

        IReadOnlyList<UsbInterfaceInfo> interfaces = UsbSysfs.ReadInterfaces(_sysfs.Root, "1-2");

        Assert.That(interfaces, Is.EqualTo(new[]
        {
            new UsbInterfaceInfo(0, 0, 0xff, "usbfs"),
            new UsbInterfaceInfo(3, 0, 0x08, null),
            new UsbInterfaceInfo(10, 1, 0x08, "usb-storage"),
        }));
        Assert.That(UsbSysfs.ReadConfigurationValue(_sysfs.Root, "1-2"), Is.EqualTo(2));
    }

    [Test]
    public void Unconfigured_HasNoInterfaces()
    {
        _sysfs.AddDevice("1-2", 1, 5, configuration: 0);
        Assert.That(UsbSysfs.ReadConfigurationValue(_sysfs.Root, "1-2"), Is.Zero);
        Assert.That(UsbSysfs.ReadInterfaces(_sysfs.Root, "1-2"), Is.Empty);
    }

    [Test]
    public void AbsentDevice_IsNull_AndHasNoInterfaces()
    {
        Assert.That(UsbSysfs.ReadConfigurationValue(_sysfs.Root, "3-1"), Is.Null);
        Assert.That(UsbSysfs.ReadInterfaces(_sysfs.Root, "3-1"), Is.Empty);
    }

    [Test]
    public void OtherConfigurationsLeftovers_AreNotListed()
    {
        _sysfs.AddDevice("1-2", 1, 5, configuration: 1);
        _sysfs.AddInterface("1-2", 1, 0);
        _sysfs.AddInterface("1-2", 2, 1);
        Assert.That(UsbSysfs.ReadInterfaces(_sysfs.Root, "1-2").Select(i => i.Number), Is.EqualTo(new[] { 0 }));
    }

    [Test]
    public void HostileBusId_Throws() =>
        Assert.Throws<ArgumentException>(() => UsbSysfs.ReadInterfaces(_sysfs.Root, "../1-2"));
}
