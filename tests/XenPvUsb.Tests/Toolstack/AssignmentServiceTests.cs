using System.Collections.Concurrent;
using XenPvUsb.Logging;
using XenPvUsb.Simulation.Devices;
using XenPvUsb.Simulation.Guest;
using XenPvUsb.Simulation.Host;
using XenPvUsb.Tests.Support;
using XenPvUsb.Toolstack;

namespace XenPvUsb.Tests.Toolstack;

/// <summary>
/// The daemon applying persistent assignments on the simulated host, with the real backend serving: domain
/// creation, guest reboot (new domid), re-plug into another port, daemon restart, a controller made later (as xl
/// makes its usbctrl), conflicts, the policy file and dom0's own devices; and the audit records of all of it.
/// </summary>
[TestFixture]
[NonParallelizable]
public sealed class AssignmentServiceTests
{
    private static readonly TimeSpan s_timeout = TimeSpan.FromSeconds(15);
    private SimWorld _world = null!;
    private AssignmentService? _service;
    private RecordingAudit _audit = null!;
    private string _conf = null!;
    private string _policy = null!;
    private TimeSpan _oldDebounce;

    [SetUp]
    public async Task StartWorld()
    {
        _world = await SimWorld.StartAsync();
        _audit = new RecordingAudit();
        _world.Audit = _audit;
        string etc = Path.Combine(_world.Directory, "etc");
        Directory.CreateDirectory(etc);
        _conf = Path.Combine(etc, "assignments.conf");
        _policy = Path.Combine(etc, "usb-policy.conf");
        _oldDebounce = AssignmentService.Debounce;
        AssignmentService.Debounce = TimeSpan.FromMilliseconds(20);
    }

    [TearDown]
    public async Task StopWorld()
    {
        if (_service is not null)
        {
            await _service.DisposeAsync();
        }
        AssignmentService.Debounce = _oldDebounce;
        await _world.DisposeAsync();
    }

    private async Task StartServiceAsync()
    {
        _service = new AssignmentService(_world.Backend, new AssignmentSources
        {
            AssignmentsPath = _conf,
            PolicyPath = _policy,
            SysfsRoot = _world.Host.SysfsRoot,
            MountInfoPath = Path.Combine(_world.Directory, "no-mountinfo"),
            VerdictTimeout = TimeSpan.FromSeconds(5),
        });
        await _service.StartAsync();
    }

    private async Task RestartServiceAsync()
    {
        await _service!.DisposeAsync();
        _service = null;
        await _world.RestartRegistryAsync();
        await StartServiceAsync();
    }

    private static async Task WaitUntilAsync(Func<bool> condition, string what)
    {
        using var cts = new CancellationTokenSource(s_timeout);
        while (!condition())
        {
            if (cts.IsCancellationRequested)
            {
                Assert.Fail($"timed out waiting for {what}");
            }
            await Task.Delay(10);
        }
    }

    /// <summary>Waits for a pass that started after now (one running now may have missed the latest triggers).</summary>
    private async Task NextPassAsync()
    {
        int now = _service!.Passes;
        _service.Kick();
        await WaitUntilAsync(() => _service.Passes >= now + 1, "an assignment pass");
        _service.Kick();
        await WaitUntilAsync(() => _service.Passes >= now + 2, "another assignment pass");
    }

    private Task<string?> PortAsync(SimulatedGuest g, int devId, int port) =>
        _world.Dom0.ReadAsync($"/local/domain/0/backend/vusb/{g.Id.Value}/{devId}/port/{port}");

    /// <summary>A stick, the rule for it, the service, and guest g1 created with the stick on <paramref name="port"/>.</summary>
    private async Task<(string Stick, SimulatedGuest Guest, SimulatedFrontend Frontend)> GuestWithAssignedStickAsync(string extra, int port = 1)
    {
        string stick = _world.PlugStick();
        File.WriteAllText(_conf, StickRule("g1", extra) + "\n");
        await StartServiceAsync();
        SimulatedGuest g = await _world.Host.CreateGuestAsync("g1");
        SimulatedFrontend fe = await g.ConnectFrontendAsync(0);
        await fe.WaitForPortAsync(port, connected: true, s_timeout);
        return (stick, g, fe);
    }

    private static string StickRule(string domain, string extra = "") =>
        $"{domain} id={MassStorageDevice.DefaultVendorId:x4}:{MassStorageDevice.DefaultProductId:x4} serial=XPU0001{extra}";

    [Test]
    public async Task RuleMadeBeforeTheGuest_ControllerAndStickOnCreate_AgainAfterReboot()
    {
        string stick = _world.PlugStick();
        File.WriteAllText(_conf, "# persistent\n" + StickRule("g1", " controller=2:4") + "\n");
        await StartServiceAsync();

        SimulatedGuest g = await _world.Host.CreateGuestAsync("g1");
        SimulatedFrontend fe = await g.ConnectFrontendAsync(0);
        await fe.WaitForPortAsync(1, connected: true, s_timeout);
        Assert.That(await PortAsync(g, 0, 1), Is.EqualTo(stick));
        Assert.That(fe.NumPorts, Is.EqualTo(4));
        AuditRecord attach = await _audit.WaitForAsync(AuditAction.Attach, stick);
        Assert.That(attach.DomId, Is.EqualTo(g.Id));
        Assert.That(attach.Domain, Is.EqualTo("g1"));
        Assert.That(attach.VidPid, Is.EqualTo("1209:5a01"));
        Assert.That(attach.Serial, Is.EqualTo("XPU0001"));
        Assert.That(attach.Rule, Does.StartWith("line 2: g1 id=1209:5a01 serial=XPU0001"));

        // xl reboot: the domain dies, its controller goes, the stick goes back to dom0; the new domain gets it again.
        await _world.Host.DestroyGuestAsync(g);
        await _audit.WaitForAsync(AuditAction.Detach, stick);
        SimulatedGuest g2 = await _world.Host.CreateGuestAsync("g1");
        Assert.That(g2.Id, Is.Not.EqualTo(g.Id));
        SimulatedFrontend fe2 = await g2.ConnectFrontendAsync(0);
        await fe2.WaitForPortAsync(1, connected: true, s_timeout);
        Assert.That(await PortAsync(g2, 0, 1), Is.EqualTo(stick));
        // The record follows the attach: the guest may see its port connected a moment before it is written.
        Assert.That((await _audit.WaitForAsync(AuditAction.Attach, stick, nth: 2)).DomId, Is.EqualTo(g2.Id));
        Assert.That(_audit.Of(AuditAction.Attach).Count(r => r.BusId == stick), Is.EqualTo(2));
    }

    [Test]
    public async Task StickUnpluggedAndPluggedIntoAnotherPort_IsAttachedAgain_AndTheOldPortFreed()
    {
        (string stick, SimulatedGuest g, SimulatedFrontend fe) = await GuestWithAssignedStickAsync(" controller=2:4");

        string image = Path.Combine(_world.Directory, "moved.img");
        StickImage.Create(image, 1024 * 1024, 1);
        Assert.That(_world.Host.Usb.Unplug(stick), Is.True);
        await fe.WaitForPortAsync(1, connected: false, s_timeout);
        await _audit.WaitForAsync(AuditAction.Unplug, stick);
        await WaitUntilAsync(() => PortAsync(g, 0, 1).Result == "", "port 1 freed");

        string moved = _world.Plug(new MassStorageDevice(image));
        Assert.That(moved, Is.Not.EqualTo(stick));
        await fe.WaitForPortAsync(1, connected: true, s_timeout);
        Assert.That(await PortAsync(g, 0, 1), Is.EqualTo(moved));
        await _audit.WaitForAsync(AuditAction.Attach, moved);
    }

    [Test]
    public async Task StickUnpluggedAndBackInTheSamePort_IsAPlug_OnItsPort()
    {
        (string stick, SimulatedGuest g, SimulatedFrontend fe) = await GuestWithAssignedStickAsync(" controller=2:4 port=3", port: 3);

        string image = Path.Combine(_world.Directory, "again.img");
        StickImage.Create(image, 1024 * 1024, 1);
        _world.Host.Usb.Unplug(stick);
        await fe.WaitForPortAsync(3, connected: false, s_timeout);
        _world.Host.Usb.Plug(stick, new MassStorageDevice(image));
        await fe.WaitForPortAsync(3, connected: true, s_timeout);
        await NextPassAsync();
        Assert.That(await PortAsync(g, 0, 3), Is.EqualTo(stick));
        Assert.That(_audit.Of(AuditAction.Plug).Count(r => r.BusId == stick) + _audit.Of(AuditAction.Attach).Count(r => r.BusId == stick), Is.EqualTo(2),
            "the stick came back once: a plug on its port, or (if the pass freed the port first) one more attach");
    }

    [Test]
    public async Task DaemonRestart_KeepsTheAssignment_AndAttachesNothingTwice()
    {
        (string stick, SimulatedGuest g, _) = await GuestWithAssignedStickAsync(" controller=2:4");

        await RestartServiceAsync();
        await NextPassAsync();
        Assert.That(await PortAsync(g, 0, 1), Is.EqualTo(stick));
        Assert.That(await _world.Dom0.DirectoryAsync($"/local/domain/0/backend/vusb/{g.Id.Value}"), Is.EqualTo(new[] { "0" }), "no second controller");
        Assert.That(_audit.Of(AuditAction.Attach).Count(r => r.BusId == stick), Is.EqualTo(1));
    }

    [Test]
    public async Task ControllerMadeLaterByTheToolstack_GetsTheDevice_AndNoRefusalIsRecordedMeanwhile()
    {
        string stick = _world.PlugStick();
        File.WriteAllText(_conf, StickRule("g1") + "\n");
        await StartServiceAsync();
        SimulatedGuest g = await _world.Host.CreateGuestAsync("g1");
        await NextPassAsync();
        Assert.That(await _world.Dom0.DirectoryAsync($"/local/domain/0/backend/vusb/{g.Id.Value}"), Is.Empty, "the rule asks for no controller");
        Assert.That(_audit.Records, Is.Empty, "waiting for a controller is not a refusal");

        // xl create with usbctrl = [ "type=pv,version=2,ports=4" ]: libxl writes the controller after the domain exists.
        Task<SimulatedFrontend> connecting = g.ConnectFrontendAsync(0);
        int devId = await _world.Toolstack.CreateControllerAsync(g.Id, 2, 4);
        SimulatedFrontend fe = await connecting;
        await fe.WaitForPortAsync(1, connected: true, s_timeout);
        Assert.That(await PortAsync(g, devId, 1), Is.EqualTo(stick));
    }

    [Test]
    public async Task AssignWhileTheGuestRuns_TakesEffectWhenTheFileChanges()
    {
        string stick = _world.PlugStick();
        await StartServiceAsync();
        GuestHandle g = await _world.AddGuestAsync("g1", ports: 2);
        AssignmentFile.Add(_conf, AssignmentFile.ParseRule(["g1", "serial=XPU0001"]));
        await g.Frontend.WaitForPortAsync(1, connected: true, s_timeout);
        Assert.That(await PortAsync(g.Guest, g.DevId, 1), Is.EqualTo(stick));
    }

    [Test]
    public async Task DeviceTwoDomainsRulesMatch_GoesToTheFirstRule_TheConflictRecordedOnce()
    {
        string stick = _world.PlugStick();
        File.WriteAllText(_conf, StickRule("g1") + "\n" + "g2 class=08\n");
        await StartServiceAsync();
        GuestHandle g2 = await _world.AddGuestAsync("g2", ports: 2);
        GuestHandle g1 = await _world.AddGuestAsync("g1", ports: 2);
        await g1.Frontend.WaitForPortAsync(1, connected: true, s_timeout);
        AuditRecord refusal = await _audit.WaitForAsync(AuditAction.Refuse, stick);
        Assert.That(refusal.Domain, Is.EqualTo("g2"));
        Assert.That(refusal.Reason, Does.Contain("line 1 for g1"));
        Assert.That(refusal.Rule, Is.EqualTo("line 2: g2 class=08"));
        await NextPassAsync();
        await NextPassAsync();
        Assert.That(_audit.Of(AuditAction.Refuse).Count(), Is.EqualTo(1), "recorded once, not on every pass");
        Assert.That(await PortAsync(g2.Guest, g2.DevId, 1), Is.Empty);
    }

    [Test]
    public async Task PolicyFileDenial_IsAPolicyRecord_UntilThePolicyChanges()
    {
        string stick = _world.PlugStick();
        File.WriteAllText(_policy, "DENY:class=08 # no storage\nALLOW:\n");
        File.WriteAllText(_conf, StickRule("g1", " force") + "\n");
        await StartServiceAsync();
        GuestHandle g = await _world.AddGuestAsync("g1", ports: 2);
        AuditRecord denial = await _audit.WaitForAsync(AuditAction.Policy, stick);
        Assert.That(denial.Reason, Does.Contain("policy line 1 (DENY:class=08)"), "force does not override the policy");
        Assert.That(await PortAsync(g.Guest, g.DevId, 1), Is.Empty);

        File.WriteAllText(_policy, "ALLOW:class=08\nDENY:\n");
        await g.Frontend.WaitForPortAsync(1, connected: true, s_timeout);
        Assert.That(await PortAsync(g.Guest, g.DevId, 1), Is.EqualTo(stick));
    }

    [Test]
    public async Task BroadRule_NeverTakesDom0sKeyboard_ButNamingItOrForceDoes()
    {
        string keyboard = _world.Plug(new HidKeyboardDevice());
        // dom0's usbhid drives it: its interface has a driver.
        string iface = Path.Combine(_world.Host.SysfsRoot, "bus", "usb", "devices", $"{keyboard}:1.0");
        File.CreateSymbolicLink(Path.Combine(iface, "driver"), "../../../../bus/usb/drivers/usbhid");
        File.WriteAllText(_conf, "g1 class=03\n");
        await StartServiceAsync();
        GuestHandle g = await _world.AddGuestAsync("g1", ports: 2);
        AuditRecord decision = await _audit.WaitForAsync(AuditAction.Policy, keyboard);
        Assert.That(decision.Reason, Does.Contain("dom0 needs it").And.Contain("dom0's keyboard"));
        Assert.That(decision.Domain, Is.EqualTo("g1"));
        Assert.That(await PortAsync(g.Guest, g.DevId, 1), Is.Empty);

        File.WriteAllText(_conf, "g1 class=03 force\n");
        await g.Frontend.WaitForPortAsync(1, connected: true, s_timeout);
        Assert.That(await PortAsync(g.Guest, g.DevId, 1), Is.EqualTo(keyboard));
    }

    [Test]
    public async Task RefusedByTheDaemon_IsNotRetriedOnEveryPass()
    {
        // The backend refuses the stick (another program holds it): the assignment is not tried again on every pass.
        string stick = _world.PlugStick();
        _world.Usb.Wrap(stick, d =>
        {
            d.Dispose();
            throw new XenPvUsb.Usb.UsbDeviceException("another program holds it", 16);
        });
        File.WriteAllText(_conf, StickRule("g1") + "\n");
        await StartServiceAsync();
        GuestHandle g = await _world.AddGuestAsync("g1", ports: 2);
        await _audit.WaitForAsync(AuditAction.Refuse, stick);
        await NextPassAsync();
        await NextPassAsync();
        Assert.That(_audit.Of(AuditAction.Refuse).Count(r => r.BusId == stick), Is.EqualTo(1));
        Assert.That(await PortAsync(g.Guest, g.DevId, 1), Is.Empty);
    }

    private sealed class RecordingAudit : IAuditTrail
    {
        private readonly ConcurrentQueue<AuditRecord> _records = new();

        public IReadOnlyList<AuditRecord> Records => [.. _records];

        public void Record(AuditRecord record) => _records.Enqueue(record);

        public IEnumerable<AuditRecord> Of(AuditAction action) => _records.Where(r => r.Action == action);

        /// <summary>The <paramref name="nth"/> record (1: the first) of that action for that device, once it is there.</summary>
        public async Task<AuditRecord> WaitForAsync(AuditAction action, string busId, int nth = 1)
        {
            using var cts = new CancellationTokenSource(s_timeout);
            while (true)
            {
                if (_records.Where(r => r.Action == action && r.BusId == busId).Skip(nth - 1).FirstOrDefault() is { } r)
                {
                    return r;
                }
                if (cts.IsCancellationRequested)
                {
                    Assert.Fail($"no {action} record for {busId}; have: {string.Join(" | ", _records.Select(x => $"{x.Action} {x.BusId} {x.Message}"))}");
                }
                await Task.Delay(10);
            }
        }
    }
}
