using System.Runtime.InteropServices;
using XenPvUsb.Interop.Linux;
using XenPvUsb.Usb;
using XenPvUsb.Usb.Usbfs;
using XenPvUsb.Xen;

namespace XenPvUsb.Tests.Usbfs;

[TestFixture]
public sealed class UsbfsHostTests
{
    private static readonly TimeSpan s_timeout = TimeSpan.FromSeconds(10);

    private FakeSysfs _sysfs = null!;
    private EventLoop _loop = null!;
    private List<string> _opened = null!;
    private Dictionary<string, FakeUsbfsFile> _files = null!;
    private List<FakeUsbfsFile> _all = null!;
    private List<string> _journal = null!;
    private Dictionary<string, Action<FakeUsbfsFile>> _configure = null!;
    private FakeFdStore _store = null!;
    private List<FakeUsbfsFile> _adopted = null!;
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
        _sysfs.AddDevice("usb12", 12, 1, deviceClass: "09", maxChild: 2);
        _sysfs.AddDevice("12-1", 12, 2, deviceClass: "09", maxChild: 4);
        _sysfs.AddDevice("12-1.4", 12, 103);
        _loop = new EventLoop(busyPollMicroseconds: 0);
        _opened = new();
        _files = new();
        _all = new();
        _journal = new();
        _configure = new();
        _store = new FakeFdStore();
        _adopted = new();
        _events = new();
        _host = CreateHost();
    }

    [TearDown]
    public void TearDown()
    {
        _host.Dispose();
        _loop.Dispose();
        foreach (FakeUsbfsFile f in _all)
        {
            f.Dispose();
        }
        _sysfs.Dispose();
    }

    private UsbfsHost CreateHost(TimeSpan parkTime = default)
    {
        var host = new UsbfsHost(_loop, _sysfs.Root, "/dev/bus/usb", null, Open, hotplug: false, _store, Adopt, parkTime);
        host.Hotplug += e =>
        {
            lock (_events)
            {
                _events.Add(e);
            }
        };
        return host;
    }

    private FakeUsbfsFile Open(string path)
    {
        lock (_opened)
        {
            _opened.Add(path);
            string name = path.Replace("/dev/bus/usb/", "", StringComparison.Ordinal);
            var f = new FakeUsbfsFile(name, _journal);
            if (_configure.TryGetValue(path, out Action<FakeUsbfsFile>? configure))
            {
                configure(f);
            }
            _files[path] = f;
            _all.Add(f);
            return f;
        }
    }

    // An inherited fd becomes a fake hub node that says (CONNINFO_EX) it is hub 12-1.
    private FakeUsbfsFile Adopt(SafeHandle inherited)
    {
        inherited.Dispose();
        var f = new FakeUsbfsFile("inherited", _journal) { ConnInfoResult = 0, ConnBusNum = 12, ConnDevNum = 2 };
        lock (_opened)
        {
            _adopted.Add(f);
            _all.Add(f);
        }
        return f;
    }

    private string[] Journal()
    {
        lock (_journal)
        {
            return [.. _journal];
        }
    }

    private UsbHotplugEvent[] Events()
    {
        lock (_events)
        {
            return [.. _events];
        }
    }

    private static void Wait(Task task) => task.WaitAsync(s_timeout).GetAwaiter().GetResult();

    private static void WaitUntil(Func<bool> condition, string what)
    {
        DateTime deadline = DateTime.UtcNow + s_timeout;
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                Assert.Fail($"timed out waiting for {what}");
            }
            Thread.Sleep(1);
        }
    }

    [Test]
    public void Open_ClaimsThePortOnTheRootHub_BeforeTheInterfaces_AndStoresTheHubFd()
    {
        using IUsbHostDevice device = _host.Open("1-2");
        Assert.That(_opened, Is.EqualTo(new[] { "/dev/bus/usb/001/001", "/dev/bus/usb/001/005" }));
        Assert.That(Journal(), Is.EqualTo(new[] { "001/001: claim_port 2", "001/005: disconnect_claim 0 2 usbfs" }));
        Assert.That(_store.Log, Is.EqualTo(new[] { "add xenpvusb-port-1-2" }));
        Assert.That(_store.Stored("xenpvusb-port-1-2"), Is.SameAs(_files["/dev/bus/usb/001/001"].Handle), "the hub's fd, which owns the claim");
        Assert.That(_host.Claims.StateOf("1-2"), Is.EqualTo(PortClaimState.Held));
    }

    [Test]
    public void Open_BehindAHub_ClaimsThatHubsPort_NumbersFromSysfs()
    {
        using IUsbHostDevice device = _host.Open("12-1.4");
        Assert.That(_opened, Is.EqualTo(new[] { "/dev/bus/usb/012/002", "/dev/bus/usb/012/103" }));
        Assert.That(_files["/dev/bus/usb/012/002"].Calls, Is.EqualTo(new[] { "claim_port 4" }));
        Assert.That(device.BusId, Is.EqualTo("12-1.4"));
    }

    [Test]
    public void Open_PortOwnedByAnotherProgram_FailsWithEbusy_AndTouchesNothingElse()
    {
        _configure["/dev/bus/usb/001/001"] = f => f.ClaimPortResult = -UsbDevFs.EBUSY;
        var e = Assert.Throws<UsbDeviceException>(() => _host.Open("1-2"));
        Assert.That(e!.Errno, Is.EqualTo(UsbDevFs.EBUSY));
        Assert.That(e.Message, Does.Contain("port 2 of hub usb1").And.Contain("claimed by another program"));
        Assert.That(_opened, Is.EqualTo(new[] { "/dev/bus/usb/001/001" }), "the device node is not opened");
        Assert.That(_files["/dev/bus/usb/001/001"].Disposed, Is.True);
        Assert.That(_store.Log, Is.Empty);
        Assert.That(_host.Claims.StateOf("1-2"), Is.Null);
    }

    [Test]
    public void Open_Twice_IsRefusedWithEbusy()
    {
        using IUsbHostDevice device = _host.Open("1-2");
        var e = Assert.Throws<UsbDeviceException>(() => _host.Open("1-2"));
        Assert.That(e!.Errno, Is.EqualTo(UsbDevFs.EBUSY));
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
    public void Open_InterfaceClaimFailure_ReleasesThePortBeforeReconnecting_AndClosesTheNode()
    {
        _sysfs.AddInterface("1-2", 1, 1, driver: "usbhid");
        _configure["/dev/bus/usb/001/005"] = f => f.ClaimResults[1] = -UsbDevFs.EBUSY;
        Assert.Throws<UsbDeviceException>(() => _host.Open("1-2"));
        Assert.That(Journal(), Is.EqualTo(new[]
        {
            "001/001: claim_port 2",
            "001/005: disconnect_claim 0 2 usbfs", "001/005: disconnect_claim 1 2 usbfs",
            "001/001: release_port 2", "001/001: close",
            "001/005: release 0", "001/005: connect 0",
            "001/005: close",
        }));
        Assert.That(_store.Log, Is.EqualTo(new[] { "add xenpvusb-port-1-2", "remove xenpvusb-port-1-2" }));
        Assert.That(_host.Claims.StateOf("1-2"), Is.Null);
    }

    [Test]
    public void Dispose_ReleasesThePortBeforeTheInterfacesAndConnect()
    {
        IUsbHostDevice device = _host.Open("1-2");
        device.Dispose();
        Wait(device.Released);
        Assert.That(Journal(), Is.EqualTo(new[]
        {
            "001/001: claim_port 2", "001/005: disconnect_claim 0 2 usbfs",
            "001/001: release_port 2", "001/001: close",
            "001/005: release 0", "001/005: connect 0", "001/005: close",
        }));
        Assert.That(_store.Log, Is.EqualTo(new[] { "add xenpvusb-port-1-2", "remove xenpvusb-port-1-2" }));
        Assert.That(_host.Claims.StateOf("1-2"), Is.Null);
    }

    [Test]
    public void DeviceGone_PortStaysClaimed_AndTheReEnumeratedDeviceTakesTheClaimOver()
    {
        IUsbHostDevice device = _host.Open("1-2");
        FakeUsbfsFile node = _files["/dev/bus/usb/001/005"];
        node.Unplug();
        WaitUntil(() => ((UsbfsDevice)device).IsGone, "POLLHUP");
        device.Dispose();
        Wait(device.Released);
        Assert.That(_host.Claims.StateOf("1-2"), Is.EqualTo(PortClaimState.Parked));
        Assert.That(Journal(), Does.Not.Contain("001/001: release_port 2"));
        Assert.That(_store.Log, Is.EqualTo(new[] { "add xenpvusb-port-1-2" }), "still in the fd store");

        // It comes back as a new device on the same port, unconfigured (the port is owned) and driverless.
        _sysfs.RemoveDevice("1-2");
        _sysfs.AddDevice("1-2", 1, 9, configuration: 0);
        _opened.Clear();
        using IUsbHostDevice again = _host.Open("1-2");
        Assert.That(_opened, Is.EqualTo(new[] { "/dev/bus/usb/001/009" }), "no second CLAIM_PORT (EBUSY): the kept claim is taken over");
        Assert.That(_host.Claims.StateOf("1-2"), Is.EqualTo(PortClaimState.Held));
    }

    [Test]
    public void DeviceGone_BeforeTheLoopSawPollHup_PortStaysClaimedAnyway()
    {
        IUsbHostDevice device = _host.Open("1-2");
        _files["/dev/bus/usb/001/005"].FailWithEnodev(); // gone, and the unplug's uevent came before POLLHUP
        device.Dispose();
        Wait(device.Released);
        Assert.That(_host.Claims.StateOf("1-2"), Is.EqualTo(PortClaimState.Parked));
        Assert.That(Journal(), Does.Not.Contain("001/001: release_port 2"));
    }

    [Test]
    public void DeviceGone_ItsSuccessorOpensAtOnce_EvenWhileTheOldWorkerIsStuck()
    {
        IUsbHostDevice device = _host.Open("1-2");
        FakeUsbfsFile node = _files["/dev/bus/usb/001/005"];
        using FakeGate stuck = node.Block("setconfig");
        Task<int> set = _loop.InvokeAsync(() => device.SetConfigurationAsync(1)).WaitAsync(s_timeout).GetAwaiter().GetResult();
        Assert.That(stuck.WaitEntered(s_timeout), Is.True);
        node.HangUp();
        WaitUntil(() => ((UsbfsDevice)device).IsGone, "POLLHUP");
        device.Dispose();
        Assert.That(_host.Claims.StateOf("1-2"), Is.EqualTo(PortClaimState.Parked), "parked by Dispose itself, not by the stuck worker");

        _sysfs.RemoveDevice("1-2");
        _sysfs.AddDevice("1-2", 1, 9, configuration: 0);
        using IUsbHostDevice again = _host.Open("1-2");
        Assert.That(_host.Claims.StateOf("1-2"), Is.EqualTo(PortClaimState.Held));
        Assert.That(device.Released.IsCompleted, Is.False);

        stuck.Release();
        Wait(set);
        Wait(device.Released);
        Assert.That(_host.Claims.StateOf("1-2"), Is.EqualTo(PortClaimState.Held), "the old device's teardown leaves its successor's claim alone");
    }

    [Test]
    public void DeviceGone_AndNotBackInTime_IsHandedBackToDom0()
    {
        _host.Dispose();
        _host = CreateHost(parkTime: TimeSpan.FromMilliseconds(100));
        IUsbHostDevice device = _host.Open("1-2");
        _files["/dev/bus/usb/001/005"].Unplug();
        WaitUntil(() => ((UsbfsDevice)device).IsGone, "POLLHUP");
        // The device re-enumerated meanwhile; with its port owned the kernel did not configure it.
        _sysfs.RemoveDevice("1-2");
        _sysfs.AddDevice("1-2", 1, 9, configuration: 0);
        _sysfs.SetFirstConfigurationValue("1-2", 1);
        device.Dispose();
        Wait(device.Released);

        WaitUntil(() => _host.Claims.StateOf("1-2") is null && Journal().Contains("001/009: close"), "the hand-back");
        Assert.That(Journal()[^4..], Is.EqualTo(new[] { "001/001: release_port 2", "001/001: close", "001/009: setconfig 1", "001/009: close" }));
        Assert.That(_store.Log[^1], Is.EqualTo("remove xenpvusb-port-1-2"));
    }

    [Test]
    public void KeepClaimsForRestart_DisposeLeavesThePortClaimedAndStored()
    {
        IUsbHostDevice device = _host.Open("1-2");
        _host.KeepClaimsForRestart();
        device.Dispose();
        Wait(device.Released);
        Assert.That(_host.Claims.StateOf("1-2"), Is.EqualTo(PortClaimState.Kept));
        Assert.That(Journal(), Is.EqualTo(new[] { "001/001: claim_port 2", "001/005: disconnect_claim 0 2 usbfs", "001/005: close" }), "no RELEASE_PORT, no CONNECT: dom0 gets nothing in between");
        Assert.That(_store.StoredNames, Is.EqualTo(new[] { "xenpvusb-port-1-2" }));
    }

    [Test]
    public void InheritedClaim_IsTakenOverByOpen_WithoutClaimingAgain()
    {
        _host.Dispose();
        _store.Inherit("xenpvusb-port-12-1.4");
        _host = CreateHost();
        Assert.That(_host.InheritedClaims, Is.EqualTo(new[] { "12-1.4" }));

        using IUsbHostDevice device = _host.Open("12-1.4");
        Assert.That(_opened, Is.EqualTo(new[] { "/dev/bus/usb/012/103" }), "CLAIM_PORT again would fail with EBUSY: the old fd owns the port");
        Assert.That(_host.InheritedClaims, Is.Empty);
        Wait(_host.HandBackInheritedClaimsAsync());
        Assert.That(_adopted[0].Calls, Is.Empty, "taken over, so not handed back");

        device.Dispose();
        Wait(device.Released);
        Assert.That(_adopted[0].Calls, Is.EqualTo(new[] { "release_port 4", "close" }));
        Assert.That(_store.Log, Is.EqualTo(new[] { "remove xenpvusb-port-12-1.4" }));
    }

    [Test]
    public void InheritedClaim_NobodyTakesOver_IsHandedBackAfterTheStartupScan()
    {
        _host.Dispose();
        _sysfs.AddInterface("12-1.4", 1, 0);
        _sysfs.AddInterface("12-1.4", 1, 1, driver: "usbhid");
        _store.Inherit("xenpvusb-port-12-1.4");
        _host = CreateHost();

        Wait(_host.HandBackInheritedClaimsAsync());

        Assert.That(Journal(), Is.EqualTo(new[]
        {
            "inherited: release_port 4", "inherited: close",
            "012/103: connect 0", "012/103: close",
        }), "port first, then every interface without a driver");
        Assert.That(_store.Log, Is.EqualTo(new[] { "remove xenpvusb-port-12-1.4" }));
        Assert.That(_host.Claims.StateOf("12-1.4"), Is.Null);
    }

    [Test]
    public void HandBack_OfAStaleControllersDevice_WithoutAnyClaim_OffersItsInterfacesToDom0()
    {
        // The predecessor closed it without hand-back and systemd dropped the claim with the stop.
        _sysfs.AddInterface("12-1.4", 1, 0);
        _sysfs.AddInterface("12-1.4", 1, 1, driver: "usbhid");
        Wait(_host.HandBackAsync("12-1.4"));
        Assert.That(Journal(), Is.EqualTo(new[] { "012/103: connect 0", "012/103: close" }), "no port to release; every interface without a driver offered");
    }

    [Test]
    public void HandBack_OfADeviceWithAnInheritedClaim_ReleasesThePortFirst()
    {
        _host.Dispose();
        _sysfs.AddInterface("12-1.4", 1, 0);
        _store.Inherit("xenpvusb-port-12-1.4");
        _host = CreateHost();
        Wait(_host.HandBackAsync("12-1.4"));
        Assert.That(Journal(), Is.EqualTo(new[] { "inherited: release_port 4", "inherited: close", "012/103: connect 0", "012/103: close" }));
        Wait(_host.HandBackInheritedClaimsAsync());
        Assert.That(Journal(), Has.Length.EqualTo(4), "handed back once");
    }

    [Test]
    public void HandBack_OfADeviceOpenHere_LeavesItAlone()
    {
        using IUsbHostDevice device = _host.Open("1-2");
        int before = Journal().Length;
        Wait(_host.HandBackAsync("1-2"));
        Assert.That(Journal(), Has.Length.EqualTo(before));
    }

    [Test]
    public void InheritedClaim_DeviceNoLongerThere_OnlyReleasesThePort()
    {
        _host.Dispose();
        _sysfs.RemoveDevice("12-1.4");
        _store.Inherit("xenpvusb-port-12-1.4");
        _host = CreateHost();
        Wait(_host.HandBackInheritedClaimsAsync());
        Assert.That(Journal(), Is.EqualTo(new[] { "inherited: release_port 4", "inherited: close" }));
        Assert.That(_opened, Is.Empty);
    }

    [Test]
    public void InheritedFd_OfAHubThatIsNowAnotherDevice_IsDropped()
    {
        _host.Dispose();
        _sysfs.RemoveDevice("12-1");
        _sysfs.AddDevice("12-1", 12, 3, deviceClass: "09", maxChild: 4); // re-enumerated: devnum 3, the fd says 2
        _store.Inherit("xenpvusb-port-12-1.4");
        _store.Inherit("xenpvusb-port-not-a-bus-id");
        _host = CreateHost();
        Assert.That(_host.InheritedClaims, Is.Empty);
        Assert.That(_store.Log, Is.EquivalentTo(new[] { "remove xenpvusb-port-12-1.4", "remove xenpvusb-port-not-a-bus-id" }));
        Assert.That(_adopted.All(f => f.Disposed), Is.True);
    }

    [Test]
    public void OtherProgramsFds_AreLeftInTheStore()
    {
        _host.Dispose();
        _store.Inherit("something-else");
        _host = CreateHost();
        Assert.That(_store.TakeInherited("something-"), Has.Count.EqualTo(1));
    }

    [Test]
    public void EnumerateAndFind_ReadSysfs()
    {
        Assert.That(_host.Enumerate().Select(d => d.BusId), Is.EqualTo(new[] { "usb1", "1-2", "1-3", "usb12", "12-1", "12-1.4" }));
        Assert.That(_host.Find("1-2")!.DevNum, Is.EqualTo(5));
        Assert.That(_host.Find("1-9"), Is.Null);
        Assert.That(_host.Find("bogus"), Is.Null);
    }

    [Test]
    public void DevicePath_IsBusAndDevnumZeroPadded() =>
        Assert.That(UsbfsHost.DevicePath("/dev/bus/usb", 3, 12), Is.EqualTo("/dev/bus/usb/003/012"));

    [TestCase("3-1.4", "3-1", 4)]
    [TestCase("3-1", "usb3", 1)]
    [TestCase("12-1.2.7", "12-1.2", 7)]
    public void ParentPort_IsTheHubAndPortFromTheBusId(string busId, string hub, int port)
    {
        Assert.That(UsbfsHandBack.TryGetParentPort(busId, out string h, out int p), Is.True);
        Assert.That((h, p), Is.EqualTo((hub, port)));
    }

    [TestCase("usb3")]
    [TestCase("3-0x")]
    public void ParentPort_NoneForRootHubsAndJunk(string busId) =>
        Assert.That(UsbfsHandBack.TryGetParentPort(busId, out _, out _), Is.False);

    [Test]
    public void Uevents_AnnounceAddOnBind_AndRemoveOnce()
    {
        _host.OnUevent(new UsbUevent("add", "1-4", null));
        Assert.That(Events(), Is.Empty, "add comes before the configuration is set; wait for bind");
        _host.OnUevent(new UsbUevent("bind", "1-4", "usb"));
        _host.OnUevent(new UsbUevent("bind", "1-4", "usb"));
        _host.OnUevent(new UsbUevent("change", "1-4", null));
        _host.OnUevent(new UsbUevent("unbind", "1-4", "usb"));
        _host.OnUevent(new UsbUevent("remove", "1-4", null));
        _host.OnUevent(new UsbUevent("remove", "1-5", null));
        _host.OnUevent(new UsbUevent("bind", "1-4", "usb"));
        Assert.That(Events(), Is.EqualTo(new[]
        {
            new UsbHotplugEvent("1-4", true),
            new UsbHotplugEvent("1-4", false),
            new UsbHotplugEvent("1-5", false),
            new UsbHotplugEvent("1-4", true),
        }));
    }

    [Test]
    public void Uevents_BindOfAnotherDeviceAtTheSamePlace_AnnouncesTheLostRemovalFirst()
    {
        _host.OnUevent(new UsbUevent("bind", "1-4", "usb", DevNum: 8));
        _host.OnUevent(new UsbUevent("bind", "1-4", "usb", DevNum: 8));
        _host.OnUevent(new UsbUevent("bind", "1-4", "usb", DevNum: 11));
        Assert.That(Events(), Is.EqualTo(new[]
        {
            new UsbHotplugEvent("1-4", true),
            new UsbHotplugEvent("1-4", false),
            new UsbHotplugEvent("1-4", true),
        }));
    }

    [Test]
    public void Overflow_ResyncsFromSysfs_AnnouncingOnlyWhatChanged()
    {
        // Seen at start: usb1, 1-2, 1-3, usb12, 12-1, 12-1.4. Then, with the events lost:
        _sysfs.RemoveDevice("12-1.4");                 // unplugged
        _sysfs.AddDevice("1-4", 1, 8);                  // plugged
        _sysfs.RemoveDevice("1-2");                     // replaced by another device
        _sysfs.AddDevice("1-2", 1, 6);
        _sysfs.AddDevice("1-1", 1, 9, bound: false);    // still enumerating: not announced until bound

        _loop.InvokeAsync(_host.OnUeventOverflow).WaitAsync(s_timeout).GetAwaiter().GetResult();
        WaitUntil(() => _host.ResyncIdleAsync().WaitAsync(s_timeout).GetAwaiter().GetResult(), "the resync");

        Assert.That(Events(), Is.EquivalentTo(new[]
        {
            new UsbHotplugEvent("12-1.4", false),
            new UsbHotplugEvent("1-2", false),
            new UsbHotplugEvent("1-2", true),
            new UsbHotplugEvent("1-4", true),
        }));
        int before = Events().Length;
        _loop.InvokeAsync(_host.OnUeventOverflow).WaitAsync(s_timeout).GetAwaiter().GetResult();
        WaitUntil(() => _host.ResyncIdleAsync().WaitAsync(s_timeout).GetAwaiter().GetResult(), "the second resync");
        Assert.That(Events(), Has.Length.EqualTo(before), "nothing changed since");
    }

    [Test]
    public void RealUeventSocket_OpensAndCloses_AndSaysWhichReceiveBufferItGot()
    {
        var log = new ListLogger();
        using var host = new UsbfsHost(_loop, _sysfs.Root, logger: log);
        Assume.That(host.HotplugEnabled, Is.True, "netlink uevent sockets are not available here");
        Assert.That(host.Enumerate(), Has.Count.EqualTo(6));
        Assert.That(log.Snapshot().Count(m => m.StartsWith("Information uevent socket: receive buffer ", StringComparison.Ordinal)
            && (m.Contains("(SO_RCVBUFFORCE)", StringComparison.Ordinal) || m.Contains("SO_RCVBUFFORCE refused", StringComparison.Ordinal))), Is.EqualTo(1));
    }
}
