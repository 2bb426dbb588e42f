using XenPvUsb.Toolstack;
using XenPvUsb.Usb;
using XenPvUsb.Xen;

namespace XenPvUsb.Tests.Toolstack;

[TestFixture]
public sealed class AssignmentPlannerTests
{
    private static readonly HashSet<string> s_none = [];

    private static HostDevice Dev(string busId, ushort vid, ushort pid, string? serial = null, UsbSpeed speed = UsbSpeed.High,
        byte deviceClass = 0, params byte[] interfaces) =>
        new(new UsbDeviceInfo(busId, 1, 2, vid, pid, deviceClass, speed, deviceClass == 9 ? 4 : 0, null, null, serial), interfaces);

    private static readonly HostDevice s_stick = Dev("1-1", 0x0781, 0x5581, "STICK1", UsbSpeed.High, 0, 8);
    private static readonly HostDevice s_keyboard = Dev("1-2", 0x046d, 0xc31c, null, UsbSpeed.Low, 0, 3);
    private static readonly HostDevice s_mouse = Dev("1-3", 0x046d, 0xc077, null, UsbSpeed.Low, 0, 3);
    private static readonly HostDevice s_hub = Dev("1-4", 0x05e3, 0x0608, null, UsbSpeed.High, 9, 9);

    private static AssignmentRule Rule(string line, int number = 1) => AssignmentFile.ParseRule(line.Split(' '), number);

    private static RunningDomain Domain(string name, int id, params PlannedController[] controllers) => new(name, new DomId((ushort)id), controllers);

    private static PlannedController Controller(int devId, int usbVersion, params string?[] ports) => new(devId, usbVersion, ports);

    [Test]
    public void MatchingDevice_GoesToTheFirstFreePort_OrTheOneAsked()
    {
        var web = Domain("web", 3, Controller(0, 2, "9-9", null, null, null));
        IReadOnlyList<AssignmentAction> plan = AssignmentPlanner.Plan([Rule("web serial=STICK1")], [web], [s_stick], s_none);
        Assert.That(plan, Is.EqualTo(new AssignmentAction[] { new AttachAction(Rule("web serial=STICK1"), web.Id, 0, 2, "1-1") }));

        plan = AssignmentPlanner.Plan([Rule("web id=0781:5581 port=4")], [web], [s_stick], s_none);
        Assert.That(plan.OfType<AttachAction>().Single().Port, Is.EqualTo(4));
        plan = AssignmentPlanner.Plan([Rule("web id=0781:5581 port=1")], [web], [s_stick], s_none);
        Assert.That(plan.OfType<RefusalAction>().Single().Reason, Does.Contain("port 1 is not free"));
    }

    [Test]
    public void DomainWithoutAController_GetsTheOneTheRuleAsksFor_OrNothing()
    {
        var web = Domain("web", 3);
        AssignmentRule rule = Rule("web serial=STICK1 controller=2:4 port=3");
        IReadOnlyList<AssignmentAction> plan = AssignmentPlanner.Plan([rule], [web], [s_stick], s_none);
        Assert.That(plan, Is.EqualTo(new AssignmentAction[]
        {
            new CreateControllerAction(rule, web.Id, new ControllerSpec(2, 4)),
            new AttachAction(rule, web.Id, null, 3, "1-1"),
        }));
        Assert.That(AssignmentPlanner.Plan([Rule("web serial=STICK1")], [web], [s_stick], s_none).OfType<RefusalAction>().Single().Reason,
            Does.Contain("no free port"));
    }

    [Test]
    public void OneControllerIsMade_AndItsPortsFillInRuleOrder()
    {
        var desk = Domain("desk", 4);
        AssignmentRule kbd = Rule("desk id=046d:c31c controller=1:2", 1);
        AssignmentRule mouse = Rule("desk id=046d:c077 controller=2:8", 2);
        IReadOnlyList<AssignmentAction> plan = AssignmentPlanner.Plan([kbd, mouse], [desk], [s_keyboard, s_mouse], s_none);
        Assert.That(plan.OfType<CreateControllerAction>().Single().Spec, Is.EqualTo(new ControllerSpec(1, 2)), "the first rule's controller");
        Assert.That(plan.OfType<AttachAction>().Select(a => (a.BusId, a.Port)), Is.EqualTo(new[] { ("1-2", 1), ("1-3", 2) }));
    }

    [Test]
    public void HighSpeedDevice_NeverGoesOnAUsb11Controller()
    {
        var old = Domain("old", 5, Controller(0, 1, null, null));
        IReadOnlyList<AssignmentAction> plan = AssignmentPlanner.Plan([Rule("old serial=STICK1")], [old], [s_stick], s_none);
        Assert.That(plan.Single(), Is.TypeOf<RefusalAction>());
        plan = AssignmentPlanner.Plan([Rule("old id=046d:c31c")], [old], [s_keyboard], s_none);
        Assert.That(plan.Single(), Is.EqualTo(new AttachAction(Rule("old id=046d:c31c"), old.Id, 0, 1, "1-2")));
    }

    [Test]
    public void DeviceTwoDomainsMatch_GoesToTheFirstRule_AndTheOtherIsToldWhy()
    {
        var a = Domain("a", 1, Controller(0, 2, [null]));
        var b = Domain("b", 2, Controller(0, 2, [null]));
        IReadOnlyList<AssignmentAction> plan = AssignmentPlanner.Plan([Rule("b class=08", 1), Rule("a serial=STICK1", 2)], [a, b], [s_stick], s_none);
        Assert.That(plan.OfType<AttachAction>().Single().Domain, Is.EqualTo(b.Id));
        Assert.That(plan.OfType<RefusalAction>().Single().Reason, Is.EqualTo("also matched by line 1 for b, which comes first"));
    }

    [Test]
    public void DeviceSomeoneHasAlready_IsLeftAlone()
    {
        var a = Domain("a", 1, Controller(0, 2, "1-1", null));
        var b = Domain("b", 2, Controller(0, 2, [null]));
        Assert.That(AssignmentPlanner.Plan([Rule("a serial=STICK1")], [a, b], [s_stick], s_none), Is.Empty, "already there: nothing to do");
        Assert.That(AssignmentPlanner.Plan([Rule("b serial=STICK1")], [a, b], [s_stick], s_none), Is.Empty, "a has it (by hand): b waits");
    }

    [Test]
    public void RuleOfADomainNotRunning_StillClaimsItsDevices()
    {
        var b = Domain("b", 2, Controller(0, 2, [null]));
        IReadOnlyList<AssignmentAction> plan = AssignmentPlanner.Plan([Rule("a serial=STICK1", 1), Rule("b class=08", 2)], [b], [s_stick], s_none);
        Assert.That(plan.OfType<AttachAction>(), Is.Empty, "the stick is a's when a runs");
        Assert.That(plan.OfType<RefusalAction>().Single().Reason, Does.Contain("line 1 for a"));
    }

    [Test]
    public void HubsNever_AndDom0sDevicesOnlyByName_OrForce()
    {
        var desk = Domain("desk", 4, Controller(0, 2, null, null, null, null));
        HashSet<string> dom0 = ["1-2"];
        IReadOnlyList<AssignmentAction> plan = AssignmentPlanner.Plan([Rule("desk class=03"), Rule("desk class=09", 2)], [desk], [s_keyboard, s_mouse, s_hub], dom0);
        Assert.That(plan.OfType<AttachAction>().Select(a => a.BusId), Is.EqualTo(new[] { "1-3" }), "the mouse only");
        Assert.That(plan.OfType<RefusalAction>().Select(r => (r.BusId, r.Reason)), Is.EquivalentTo(new[]
        {
            ("1-2", "dom0 needs it (console input or boot disk); name it or add force"),
            ("1-4", "a hub cannot be passed through"),
        }));
        Assert.That(AssignmentPlanner.Plan([Rule("desk class=03 force")], [desk], [s_keyboard], dom0).Single(), Is.TypeOf<AttachAction>());
        Assert.That(AssignmentPlanner.Plan([Rule("desk id=046d:c31c")], [desk], [s_keyboard], dom0).Single(), Is.TypeOf<AttachAction>(), "named by vendor:product");
    }
}
