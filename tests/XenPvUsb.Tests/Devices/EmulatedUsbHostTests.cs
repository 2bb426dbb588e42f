using XenPvUsb.Simulation.Devices;
using XenPvUsb.Usb;

namespace XenPvUsb.Tests.Devices;

[TestFixture]
public sealed class EmulatedUsbHostTests
{
    private static readonly string[] s_rootHubsOnly = ["usb1", "usb2"];
    private static readonly string[] s_busOrder = ["usb1", "1-1", "1-1.2", "1-2", "usb2"];
    private static readonly bool[] s_busOrderRootHubs = [true, false, false, false, true];
    private static readonly bool[] s_busOrderHubs = [true, true, false, false, true];

    private TempDirectory _temp = null!;
    private EmulatedUsbHost _host = null!;
    private List<UsbHotplugEvent> _events = null!;

    [SetUp]
    public void SetUp()
    {
        _temp = new TempDirectory();
        _host = new EmulatedUsbHost(_temp.File("sys"));
        _events = [];
        _host.Hotplug += e =>
        {
            lock (_events)
            {
                _events.Add(e);
            }
        };
    }

    [TearDown]
    public void TearDown()
    {
        _host.Dispose();
        _temp.Dispose();
    }

    [Test]
    public void Plug_RaisesAddedEvent_AndAssignsDevnumsLikeLinux()
    {
        _host.Plug("1-1", new HidKeyboardDevice());
        _host.Plug("1-2", new HidKeyboardDevice());
        _host.Plug("2-1", new HidKeyboardDevice());
        _host.Unplug("1-1");
        _host.Plug("1-1", new HidKeyboardDevice());

        Assert.That(_host.Find("usb1")!.DevNum, Is.EqualTo(1), "root hub");
        Assert.That(_host.Find("1-2")!.DevNum, Is.EqualTo(3));
        Assert.That(_host.Find("2-1")!.DevNum, Is.EqualTo(2), "per bus");
        Assert.That(_host.Find("1-1")!.DevNum, Is.EqualTo(4), "not reused at once");
        Assert.That(_events, Is.EqualTo(new UsbHotplugEvent[]
        {
            new("1-1", true), new("1-2", true), new("2-1", true), new("1-1", false), new("1-1", true),
        }));
    }

    [Test]
    public void PluggedDevice_IsConfiguredAsByTheGenericDriver()
    {
        var keyboard = new HidKeyboardDevice();
        _host.Plug("1-3", keyboard);

        Assert.That(keyboard.BusId, Is.EqualTo("1-3"));
        Assert.That(keyboard.ActiveConfiguration, Is.EqualTo(1));
    }

    [Test]
    public void Open_ReturnsTheDevice_AndOpenTwiceThrows()
    {
        var keyboard = new HidKeyboardDevice();
        _host.Plug("1-1", keyboard);

        IUsbHostDevice handle = _host.Open("1-1");
        Assert.That(handle, Is.SameAs(keyboard));
        Assert.That(handle.BusId, Is.EqualTo("1-1"));
        UsbDeviceException busy = Assert.Throws<UsbDeviceException>(() => _host.Open("1-1"))!;
        Assert.That(busy.Errno, Is.EqualTo(16));

        handle.Dispose();
        using IUsbHostDevice again = _host.Open("1-1");
        Assert.That(again, Is.SameAs(keyboard));
    }

    [Test]
    public void Open_AbsentDevice_ThrowsWithEnodev()
    {
        UsbDeviceException absent = Assert.Throws<UsbDeviceException>(() => _host.Open("1-5"))!;

        Assert.That(absent.Errno, Is.EqualTo(19));
        Assert.Throws<UsbDeviceException>(() => _host.Open("usb1"));
    }

    [Test]
    public void DisposingTheHandle_KillsPendingWithEnoent()
    {
        _host.Plug("1-1", new HidKeyboardDevice());
        IUsbHostDevice handle = _host.Open("1-1");
        UsbTransfer pending = UsbTestIo.Data(handle, new TransferRecorder(), UsbTransferType.Interrupt, 0x81, 8);

        handle.Dispose();

        Assert.That(pending.Status, Is.EqualTo(UrbStatus.Enoent));
    }

    [Test]
    public void Unplug_CompletesPendingWithEnodev_AndRaisesRemovedEvent()
    {
        var keyboard = new HidKeyboardDevice();
        _host.Plug("1-1", keyboard);
        using IUsbHostDevice handle = _host.Open("1-1");
        var recorder = new TransferRecorder();
        UsbTransfer pending = UsbTestIo.Data(handle, recorder, UsbTransferType.Interrupt, 0x81, 8);

        Assert.That(_host.Unplug("1-1"), Is.True);

        Assert.That(pending.Status, Is.EqualTo(UrbStatus.Enodev));
        Assert.That(pending.Tag, Is.EqualTo(1));
        Assert.That(UsbTestIo.Data(handle, recorder, UsbTransferType.Interrupt, 0x81, 8).Status, Is.EqualTo(UrbStatus.Enodev));
        Assert.That(handle.SetConfigurationAsync(1).Result, Is.EqualTo(UrbStatus.Enodev));
        Assert.That(_host.Find("1-1"), Is.Null);
        Assert.That(_events[^1], Is.EqualTo(new UsbHotplugEvent("1-1", false)));
        Assert.That(_host.Unplug("1-1"), Is.False);
        Assert.That(() => _host.Plug("1-2", keyboard), Throws.InvalidOperationException, "an unplugged device is gone for good");
    }

    [Test]
    public void DevicesBehindHub_AreUnpluggedWithTheHub_ChildrenFirst()
    {
        _host.Plug("1-1", new EmulatedHub());
        _host.Plug("1-1.3", new HidKeyboardDevice());
        _host.Plug("1-1.4", new HidKeyboardDevice());
        _events.Clear();

        _host.Unplug("1-1");

        Assert.That(_events, Has.Count.EqualTo(3));
        Assert.That(_events[^1], Is.EqualTo(new UsbHotplugEvent("1-1", false)));
        Assert.That(_host.Enumerate().Select(d => d.BusId), Is.EqualTo(s_rootHubsOnly));
    }

    [TestCase("1-1.3", TestName = "Plug_BehindMissingHub_Throws")]
    [TestCase("1-2.5", TestName = "Plug_BeyondHubPorts_Throws")]
    public void Plug_WithoutSuitableHub_Throws(string busId)
    {
        _host.Plug("1-2", new EmulatedHub());

        Assert.That(() => _host.Plug(busId, new HidKeyboardDevice()), Throws.InvalidOperationException);
    }

    [TestCase("usb1")]
    [TestCase("3-1")]
    [TestCase("1-9")]
    [TestCase("1-1/../x")]
    [TestCase("")]
    public void Plug_AtInvalidBusId_Throws(string busId) =>
        Assert.That(() => _host.Plug(busId, new HidKeyboardDevice()), Throws.ArgumentException);

    [Test]
    public void Plug_Occupied_Throws()
    {
        _host.Plug("1-1", new HidKeyboardDevice());

        Assert.That(() => _host.Plug("1-1", new HidKeyboardDevice()), Throws.InvalidOperationException);
    }

    [Test]
    public void Enumerate_ListsRootHubsHubsAndDevices_InBusOrder()
    {
        _host.Plug("1-2", new HidKeyboardDevice());
        _host.Plug("1-1", new EmulatedHub());
        _host.Plug("1-1.2", new HidKeyboardDevice(UsbSpeed.Low));

        IReadOnlyList<UsbDeviceInfo> devices = _host.Enumerate();

        Assert.That(devices.Select(d => d.BusId), Is.EqualTo(s_busOrder));
        Assert.That(devices.Select(d => d.IsRootHub), Is.EqualTo(s_busOrderRootHubs));
        Assert.That(devices.Select(d => d.IsHub), Is.EqualTo(s_busOrderHubs));
        UsbDeviceInfo keyboard = devices[2];
        Assert.That(keyboard.VendorId, Is.EqualTo(0x1209));
        Assert.That(keyboard.ProductId, Is.EqualTo(0x5A02));
        Assert.That(keyboard.Speed, Is.EqualTo(UsbSpeed.Low));
        Assert.That(keyboard.Product, Is.EqualTo("Emulated Keyboard"));
        Assert.That(_host.GetDevice("1-1.2"), Is.InstanceOf<HidKeyboardDevice>());
    }

    [Test]
    public void HotplugHandler_RunsOutsideTheHostLock()
    {
        UsbDeviceInfo? seen = null;
        _host.Hotplug += e => seen = _host.Find(e.BusId);

        _host.Plug("1-1", new HidKeyboardDevice());

        Assert.That(seen?.BusId, Is.EqualTo("1-1"));
    }
}
