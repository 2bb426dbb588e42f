using XenPvUsb.Interop.Linux;
using XenPvUsb.Usb;
using XenPvUsb.Usb.Usbfs;
using XenPvUsb.Xen;

namespace XenPvUsb.Tests.Usbfs;

[TestFixture]
public sealed class UsbfsHostTests
{
    private FakeSysfs _sysfs = null!;
    private EventLoop _loop = null!;
    private List<string> _opened = null!;
    private List<FakeUsbfsFile> _files = null!;
    private UsbfsHost _host = null!;
    private List<UsbHotplugEvent> _events = null!;

    [SetUp]
    public void SetUp()
    {
        _sysfs = new FakeSysfs();
        _sysfs.AddDevice("usb1", 1, 1, deviceClass: "09", maxChild: 4);
        _sysfs.AddDevice("1-2", 1, 5);
        _sysfs.AddInterface("1-2", 1, 0, driver: "usb-storage");
        _sysfs.AddDevice("1-3", 1, 7, deviceClass: "09", maxChild: 4);
        _sysfs.AddDevice("12-1.4", 12, 103);
        _loop = new EventLoop(busyPollMicroseconds: 0);
        _opened = new();
        _files = new();
        _events = new();
        _host = new UsbfsHost(_loop, _sysfs.Root, "/dev/bus/usb", null, path =>
        {
            _opened.Add(path);
            var f = new FakeUsbfsFile();
            _files.Add(f);
            return f;
        }, hotplug: false);
        _host.Hotplug += _events.Add;
    }

    [TearDown]
    public void TearDown()
    {
        _host.Dispose();
        _loop.Dispose();
        foreach (FakeUsbfsFile f in _files)
        {
            f.Dispose();
        }
        _sysfs.Dispose();
    }

    [Test]
    public void Open_UsesTheZeroPaddedNodeFromSysfs_AndClaims()
    {
        using IUsbHostDevice device = _host.Open("12-1.4");
        Assert.That(_opened, Is.EqualTo(new[] { "/dev/bus/usb/012/103" }));
        Assert.That(device.BusId, Is.EqualTo("12-1.4"));

        using IUsbHostDevice other = _host.Open("1-2");
        Assert.That(_files[1].Calls, Is.EqualTo(new[] { "disconnect_claim 0 2 usbfs" }));
    }

    [TestCase("usb1", UsbDevFs.EINVAL)]
    [TestCase("1-3", UsbDevFs.EINVAL)]
    [TestCase("1-9", UsbDevFs.ENODEV)]
    [TestCase("../../etc", UsbDevFs.EINVAL)]
    public void Open_RefusesHubsAbsentAndMalformed(string busId, int errno)
    {
        var e = Assert.Throws<UsbDeviceException>(() => _host.Open(busId));
        Assert.That(e!.Errno, Is.EqualTo(errno));
        Assert.That(_opened, Is.Empty);
    }

    [Test]
    public void Open_ClaimFailure_ClosesTheNode()
    {
        _host = new UsbfsHost(_loop, _sysfs.Root, "/dev/bus/usb", null, path =>
        {
            var f = new FakeUsbfsFile();
            f.ClaimResults[0] = -UsbDevFs.EBUSY;
            _files.Add(f);
            return f;
        }, hotplug: false);
        Assert.Throws<UsbDeviceException>(() => _host.Open("1-2"));
        Assert.That(_files[^1].Disposed, Is.True);
    }

    [Test]
    public void EnumerateAndFind_ReadSysfs()
    {
        Assert.That(_host.Enumerate().Select(d => d.BusId), Is.EqualTo(new[] { "usb1", "1-2", "1-3", "12-1.4" }));
        Assert.That(_host.Find("1-2")!.DevNum, Is.EqualTo(5));
        Assert.That(_host.Find("1-9"), Is.Null);
        Assert.That(_host.Find("bogus"), Is.Null);
    }

    [Test]
    public void DevicePath_IsBusAndDevnumZeroPadded() =>
        Assert.That(UsbfsHost.DevicePath("/dev/bus/usb", 3, 12), Is.EqualTo("/dev/bus/usb/003/012"));

    [Test]
    public void Uevents_AnnounceAddOnBind_AndRemoveOnce()
    {
        _host.OnUevent(new UsbUevent("add", "1-4", null));
        Assert.That(_events, Is.Empty, "add comes before the configuration is set; wait for bind");
        _host.OnUevent(new UsbUevent("bind", "1-4", "usb"));
        _host.OnUevent(new UsbUevent("bind", "1-4", "usb"));
        _host.OnUevent(new UsbUevent("change", "1-4", null));
        _host.OnUevent(new UsbUevent("unbind", "1-4", "usb"));
        _host.OnUevent(new UsbUevent("remove", "1-4", null));
        _host.OnUevent(new UsbUevent("remove", "1-5", null));
        _host.OnUevent(new UsbUevent("bind", "1-4", "usb"));
        Assert.That(_events, Is.EqualTo(new[]
        {
            new UsbHotplugEvent("1-4", true),
            new UsbHotplugEvent("1-4", false),
            new UsbHotplugEvent("1-5", false),
            new UsbHotplugEvent("1-4", true),
        }));
    }

    [Test]
    public void RealUeventSocket_OpensAndCloses()
    {
        using var host = new UsbfsHost(_loop, _sysfs.Root);
        Assume.That(host.HotplugEnabled, Is.True, "netlink uevent sockets are not available here");
        Assert.That(host.Enumerate(), Has.Count.EqualTo(4));
    }
}
