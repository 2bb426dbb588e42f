using System.CommandLine;
using XenPvUsb.Cli;
using XenPvUsb.Simulation.Devices;
using XenPvUsb.Tests.Support;

namespace XenPvUsb.Tests.Cli;

/// <summary>The xenpvusb verbs against the simulated host with the real backend answering.</summary>
[TestFixture]
[NonParallelizable]
public sealed class CliTests
{
    private SimWorld _world = null!;
    private string _stick = null!;
    private string _keyboard = null!;
    private string _hub = null!;

    [SetUp]
    public async Task StartWorld()
    {
        _world = await SimWorld.StartAsync();
        _stick = _world.PlugStick();
        _keyboard = _world.Plug(new HidKeyboardDevice());
        _hub = _world.Plug(new EmulatedHub());
        await _world.Host.CreateGuestAsync("alpha");
        await _world.Host.CreateGuestAsync("beta");
        Environment.SetEnvironmentVariable("XENSTORED_PATH", _world.Host.Dom0SocketPath);
        Environment.SetEnvironmentVariable("XENPVUSB_SYSFS", _world.Host.SysfsRoot);
    }

    [TearDown]
    public async Task StopWorld()
    {
        Environment.SetEnvironmentVariable("XENSTORED_PATH", null);
        Environment.SetEnvironmentVariable("XENPVUSB_SYSFS", null);
        await _world.DisposeAsync();
    }

    private static async Task<(int Exit, string Out, string Err)> RunAsync(params string[] args)
    {
        TextWriter oldOut = Console.Out, oldErr = Console.Error;
        using var o = new StringWriter();
        using var e = new StringWriter();
        Console.SetOut(o);
        Console.SetError(e);
        try
        {
            ParseResult parsed = CommandTable.Build().Parse(args);
            int exit = await parsed.InvokeAsync(new InvocationConfiguration { Output = o, Error = e });
            return (exit, o.ToString(), e.ToString());
        }
        finally
        {
            Console.SetOut(oldOut);
            Console.SetError(oldErr);
        }
    }

    [Test]
    public async Task CreateAttachListDetachDestroy_ByName()
    {
        Assert.That((await RunAsync("usb-hc-create", "alpha", "2", "8")).Exit, Is.Zero);
        Assert.That((await RunAsync("usb-attach", "alpha", "0", "1", _stick)).Exit, Is.Zero);
        (int exit, string output, _) = await RunAsync("usb-list", "alpha");
        Assert.That(exit, Is.Zero);
        Assert.That(output, Does.Contain("Port 1: Bus 001").And.Contain("1209:5a01").And.Contain("Port 8:"));
        Assert.That((await RunAsync("usb-detach", "alpha", "0", "1")).Exit, Is.Zero);
        Assert.That((await RunAsync("usb-hc-destroy", "alpha", "0")).Exit, Is.Zero);
        Assert.That(await _world.Dom0.ReadAsync("/local/domain/0/backend/vusb/1/0"), Is.Null);
        Assert.That(await _world.Dom0.ReadAsync("/local/domain/1/device/vusb/0"), Is.Null);
        Assert.That(await _world.Dom0.DirectoryAsync("/local/domain/0/backend/vusb"), Does.Not.Contain("1"),
            "the domain's last controller takes backend/vusb/<domid> with it");
        Assert.That(await _world.Dom0.DirectoryAsync("/local/domain/1/device"), Does.Not.Contain("vusb"));
    }

    [Test]
    public async Task DestroyingOneOfTwoControllers_KeepsTheOther()
    {
        Assert.That((await RunAsync("usb-hc-create", "alpha", "2", "4")).Exit, Is.Zero);
        Assert.That((await RunAsync("usb-hc-create", "alpha", "1", "2")).Exit, Is.Zero);
        Assert.That((await RunAsync("usb-hc-destroy", "alpha", "0")).Exit, Is.Zero);
        Assert.That(await _world.Dom0.DirectoryAsync("/local/domain/0/backend/vusb/1"), Is.EqualTo(new[] { "1" }));
        Assert.That(await _world.Dom0.ReadAsync("/local/domain/0/backend/vusb/1/1/usb-ver"), Is.EqualTo("1"));
        Assert.That((await RunAsync("usb-hc-destroy", "alpha", "1")).Exit, Is.Zero);
        Assert.That(await _world.Dom0.DirectoryAsync("/local/domain/0/backend/vusb"), Does.Not.Contain("1"));
    }

    [Test]
    public async Task DomainById_Works()
    {
        Assert.That((await RunAsync("usb-hc-create", "2", "1", "4")).Exit, Is.Zero);
        Assert.That(await _world.Dom0.ReadAsync("/local/domain/0/backend/vusb/2/0/usb-ver"), Is.EqualTo("1"));
    }

    [Test]
    public async Task CreatedNodes_CarryLibxlPermissions()
    {
        await RunAsync("usb-hc-create", "alpha", "2", "2");
        var be = await _world.Dom0.GetPermissionsAsync("/local/domain/0/backend/vusb/1/0");
        var fe = await _world.Dom0.GetPermissionsAsync("/local/domain/1/device/vusb/0");
        Assert.That(be.Select(p => p.ToString()), Is.EqualTo(new[] { "n0", "r1" }));
        Assert.That(fe.Select(p => p.ToString()), Is.EqualTo(new[] { "n1", "r0" }));
    }

    [TestCase("usb-hc-create", "alpha", "3", "8", "USB version")]
    [TestCase("usb-hc-create", "alpha", "2", "32", "number of ports")]
    [TestCase("usb-hc-create", "alpha", "2", "0", "number of ports")]
    [TestCase("usb-hc-create", "alpha", "two", "8", "must be a number")]
    [TestCase("usb-hc-create", "nosuchguest", "2", "8", "unknown domain")]
    [TestCase("usb-hc-create", "77", "2", "8", "does not exist")]
    [TestCase("usb-attach", "alpha", "5", "1", "1-1", "no virtual USB controller")]
    public async Task BadArguments_GetOneMessageAndExit1(params string[] argsAndMessage)
    {
        string[] args = argsAndMessage[..^1];
        (int exit, _, string err) = await RunAsync(args);
        Assert.That(exit, Is.EqualTo(1));
        Assert.That(err, Does.Contain(argsAndMessage[^1]));
        Assert.That(err.Trim().Split('\n'), Has.Length.EqualTo(1));
    }

    [Test]
    public async Task MissingArguments_ExitNonZero()
    {
        (int exit, _, _) = await RunAsync("usb-attach", "alpha");
        Assert.That(exit, Is.Not.Zero);
    }

    [Test]
    public async Task AttachingABusIdAttachedElsewhere_IsRefused()
    {
        await RunAsync("usb-hc-create", "alpha", "2", "4");
        await RunAsync("usb-hc-create", "beta", "2", "4");
        Assert.That((await RunAsync("usb-attach", "alpha", "0", "1", _stick)).Exit, Is.Zero);
        (int exit, _, string err) = await RunAsync("usb-attach", "beta", "0", "1", _stick);
        Assert.That(exit, Is.EqualTo(1));
        Assert.That(err, Does.Contain("already attached to domain 1"));
    }

    [Test]
    public async Task AttachingToAnOccupiedPort_IsRefused()
    {
        await RunAsync("usb-hc-create", "alpha", "2", "4");
        await RunAsync("usb-attach", "alpha", "0", "1", _stick);
        (int exit, _, string err) = await RunAsync("usb-attach", "alpha", "0", "1", _keyboard);
        Assert.That(exit, Is.EqualTo(1));
        Assert.That(err, Does.Contain("occupied"));
    }

    [TestCase("9", "port must be 1 to 4")]
    [TestCase("0", "port must be 1 to 4")]
    public async Task AttachingToAPortOutOfRange_IsRefused(string port, string message)
    {
        await RunAsync("usb-hc-create", "alpha", "2", "4");
        (int exit, _, string err) = await RunAsync("usb-attach", "alpha", "0", port, _stick);
        Assert.That(exit, Is.EqualTo(1));
        Assert.That(err, Does.Contain(message));
    }

    [TestCase("1-99", "no USB device")]
    [TestCase("../../etc", "not a USB device bus id")]
    [TestCase("usb1", "not a USB device bus id")]
    public async Task AttachingSomethingThatIsNotADevice_IsRefused(string busId, string message)
    {
        await RunAsync("usb-hc-create", "alpha", "2", "4");
        (int exit, _, string err) = await RunAsync("usb-attach", "alpha", "0", "1", busId);
        Assert.That(exit, Is.EqualTo(1));
        Assert.That(err, Does.Contain(message));
    }

    [Test]
    public async Task AttachingAHub_IsRefused()
    {
        await RunAsync("usb-hc-create", "alpha", "2", "4");
        (int exit, _, string err) = await RunAsync("usb-attach", "alpha", "0", "1", _hub);
        Assert.That(exit, Is.EqualTo(1));
        Assert.That(err, Does.Contain("hub"));
    }

    [Test]
    public async Task AssignableDevices_LeaveOutHubsAndAssignedDevices()
    {
        (_, string before, _) = await RunAsync("usb-list-assignable-devices");
        Assert.That(before, Does.Contain(_stick).And.Contain(_keyboard).And.Not.Contain(_hub + " ").And.Not.Contain("usb1"));
        await RunAsync("usb-hc-create", "alpha", "2", "4");
        await RunAsync("usb-attach", "alpha", "0", "1", _stick);
        (_, string after, _) = await RunAsync("usb-list-assignable-devices");
        Assert.That(after, Does.Not.Contain(_stick + " ").And.Contain(_keyboard));
    }

    [Test]
    public async Task XlSpellings_Work()
    {
        Assert.That((await RunAsync("usbctrl-attach", "alpha", "version=1", "ports=2")).Exit, Is.Zero);
        var info = _world.Host.Usb.Find(_keyboard)!;
        (int exit, string output, _) = await RunAsync("usbdev-attach", "alpha", $"hostbus={info.BusNum}", $"hostaddr={info.DevNum}");
        Assert.That(exit, Is.Zero, output);
        Assert.That(await _world.Dom0.ReadAsync("/local/domain/0/backend/vusb/1/0/port/1"), Is.EqualTo(_keyboard));
        Assert.That((await RunAsync("usbdev-detach", "alpha", "0", "1")).Exit, Is.Zero);
        Assert.That((await RunAsync("usbctrl-detach", "alpha", "0")).Exit, Is.Zero);
    }

    [Test]
    public async Task DaemonRefusal_ReachesTheCaller_AndLeavesThePortFree()
    {
        Assert.That((await RunAsync("usb-hc-create", "alpha", "1", "2")).Exit, Is.Zero);
        (int exit, _, string err) = await RunAsync("usb-attach", "alpha", "0", "1", _stick);
        Assert.That(exit, Is.EqualTo(1));
        Assert.That(err, Does.Contain($"xenpvusbd refused {_stick} on port 1 of controller 0").And.Contain("cannot be served on a USB 1.x controller"));
        Assert.That(await _world.Dom0.ReadAsync("/local/domain/0/backend/vusb/1/0/port/1"), Is.Empty);
        (_, string list, _) = await RunAsync("usb-list", "alpha");
        Assert.That(list, Does.Not.Contain(_stick));
        (exit, _, err) = await RunAsync("usb-attach", "alpha", "0", "1", _keyboard);
        Assert.That(exit, Is.Zero, err);
        Assert.That(await _world.Dom0.ReadAsync("/local/domain/0/backend/vusb/1/0/port-status/1"), Is.EqualTo($"attached {_keyboard}"));
        Assert.That((await RunAsync("usb-detach", "alpha", "0", "1")).Exit, Is.Zero);
        await _world.WaitForGoneAsync("/local/domain/0/backend/vusb/1/0/port-status/1");
    }

    [Test]
    public async Task PortWrittenByHand_ForADeviceAssignedElsewhere_IsRefused()
    {
        Assert.That((await RunAsync("usb-hc-create", "alpha", "2", "2")).Exit, Is.Zero);
        Assert.That((await RunAsync("usb-hc-create", "beta", "2", "2")).Exit, Is.Zero);
        Assert.That((await RunAsync("usb-attach", "alpha", "0", "1", _stick)).Exit, Is.Zero);
        // A toolstack that skips the CLI's own check: the daemon still refuses, and says so.
        await _world.Dom0.WriteAsync("/local/domain/0/backend/vusb/2/0/port/2", _stick);
        await _world.WaitForStateAsync("/local/domain/0/backend/vusb/2/0/port-status/2", $"refused {_stick}: already assigned to another controller or port");
        Assert.That(await _world.Dom0.ReadAsync("/local/domain/0/backend/vusb/2/0/port/2"), Is.Empty);
        Assert.That(await _world.Dom0.ReadAsync("/local/domain/0/backend/vusb/1/0/port-status/1"), Is.EqualTo($"attached {_stick}"), "the first assignment stands");
    }

    [Test]
    public async Task AnAbsentDevice_Waits_AndIsAttachedWhenPlugged()
    {
        Assert.That((await RunAsync("usb-hc-create", "alpha", "2", "2")).Exit, Is.Zero);
        await _world.Dom0.WriteAsync("/local/domain/0/backend/vusb/1/0/port/2", "1-7");
        await _world.WaitForStateAsync("/local/domain/0/backend/vusb/1/0/port-status/2", "waiting 1-7");
        _world.Host.Usb.Plug("1-7", new HidKeyboardDevice());
        await _world.WaitForStateAsync("/local/domain/0/backend/vusb/1/0/port-status/2", "attached 1-7");
        _world.Host.Usb.Unplug("1-7");
        await _world.WaitForStateAsync("/local/domain/0/backend/vusb/1/0/port-status/2", "waiting 1-7");
    }

    [Test]
    public async Task XlUnknownOption_IsRefused()
    {
        (int exit, _, string err) = await RunAsync("usbctrl-attach", "alpha", "colour=blue");
        Assert.That(exit, Is.EqualTo(1));
        Assert.That(err, Does.Contain("unknown option"));
    }

    [Test]
    public async Task NoXenstore_GivesOneClearMessage()
    {
        Environment.SetEnvironmentVariable("XENSTORED_PATH", Path.Combine(_world.Directory, "nothing-here"));
        (int exit, _, string err) = await RunAsync("usb-list", "alpha");
        Assert.That(exit, Is.EqualTo(1));
        Assert.That(err, Does.Contain("cannot reach xenstore"));
    }
    [Test]
    public async Task AssignUnassignAssignments_EditTheFile_AndRefuseBadRulesWithOneLine()
    {
        string dir = Path.Combine(_world.Directory, "etc");
        string file = Path.Combine(dir, "assignments.conf");
        Environment.SetEnvironmentVariable("XENPVUSB_ASSIGNMENTS", file);
        try
        {
            (int exit, string output, _) = await RunAsync("assign", "alpha", "id=0781:5581", "serial=4C530001", "port=2");
            Assert.That((exit, output.Trim()), Is.EqualTo((0, "assigned: alpha id=0781:5581 serial=4C530001 port=2")));
            Assert.That((await RunAsync("assign", "beta", "class=03", "controller=1:4")).Exit, Is.Zero);
            (exit, _, string err) = await RunAsync("assign", "beta", "id=07:81");
            Assert.That(exit, Is.EqualTo(1));
            Assert.That(err.Trim().Split('\n'), Has.Length.EqualTo(1));
            Assert.That(err, Does.Contain("is not vendor:product"));

            (exit, output, _) = await RunAsync("assignments", "--json");
            Assert.That(exit, Is.Zero);
            using (var doc = System.Text.Json.JsonDocument.Parse(output))
            {
                Assert.That(doc.RootElement.GetArrayLength(), Is.EqualTo(2));
                Assert.That(doc.RootElement[0].GetProperty("serial").GetString(), Is.EqualTo("4C530001"));
                Assert.That(doc.RootElement[1].GetProperty("usbVersion").GetInt32(), Is.EqualTo(1));
            }
            (_, output, _) = await RunAsync("assignments");
            Assert.That(output, Does.Contain("alpha").And.Contain("class=03"));

            (exit, output, _) = await RunAsync("usb-list-assignable-devices");
            Assert.That(exit, Is.Zero);
            Assert.That(output.Split('\n').Single(l => l.StartsWith(_keyboard + " ", StringComparison.Ordinal)),
                Does.EndWith("[assigned to beta: class=03, line 4]"), "the keyboard's HID interface is class 03");
            Assert.That(output.Split('\n').Single(l => l.StartsWith(_stick + " ", StringComparison.Ordinal)), Does.EndWith("[no assignment]"));

            Assert.That((await RunAsync("unassign", "alpha")).Exit, Is.Zero);
            Assert.That((await RunAsync("unassign", "alpha")).Exit, Is.EqualTo(1), "nothing left to remove");
            Assert.That(AssignmentRules(file), Is.EqualTo(new[] { "beta class=03 controller=1:4" }));
        }
        finally
        {
            Environment.SetEnvironmentVariable("XENPVUSB_ASSIGNMENTS", null);
        }
    }

    [Test]
    public async Task Apply_CarriesOutTheRulesNow_AndSaysWhatItDid()
    {
        string file = Path.Combine(_world.Directory, "assign-apply.conf");
        File.WriteAllText(file, $"alpha id=1209:5a01 serial=XPU0001 controller=2:4 port=2\nbeta id=1209:*\n");
        Environment.SetEnvironmentVariable("XENPVUSB_ASSIGNMENTS", file);
        try
        {
            (int exit, string output, string err) = await RunAsync("apply", "alpha");
            Assert.That(exit, Is.Zero, err);
            Assert.That(output, Does.Contain("made controller 0 (USB 2, 4 ports)").And.Contain($"attached {_stick} to controller 0 port 2"));
            Assert.That(await _world.Dom0.ReadAsync($"/local/domain/0/backend/vusb/{await DomIdOf("alpha")}/0/port/2"), Is.EqualTo(_stick));

            // beta's broad vendor rule comes second: the stick is alpha's, and beta has no controller anyway.
            (exit, output, _) = await RunAsync("apply");
            Assert.That(exit, Is.Zero);
            Assert.That(output, Does.Contain($"beta: not {_stick}: also matched by line 1 for alpha"));
            (_, output, _) = await RunAsync("apply", "alpha");
            Assert.That(output, Is.EqualTo("nothing to do\n"), "applied twice: nothing more");
        }
        finally
        {
            Environment.SetEnvironmentVariable("XENPVUSB_ASSIGNMENTS", null);
        }
    }

    [Test]
    public async Task LibvirtHook_OnStarted_AppliesTheFileAndTheDomainXmlsAssignments_AndIgnoresOtherOperations()
    {
        string file = Path.Combine(_world.Directory, "assign-hook.conf");
        File.WriteAllText(file, "# nothing for alpha here\n");
        string xml = $"""
            <domain type='xen'>
              <name>alpha</name>
              <metadata>
                <xenpvusb:assign xmlns:xenpvusb='{CommandTable.LibvirtNamespace}' match='id=1209:5a01 serial=XPU0001' port='3' controller='2:4'/>
              </metadata>
            </domain>
            """;
        Environment.SetEnvironmentVariable("XENPVUSB_ASSIGNMENTS", file);
        TextReader oldIn = Console.In;
        try
        {
            Console.SetIn(new StringReader(xml));
            Assert.That((await RunAsync("libvirt-hook", "alpha", "prepare", "begin", "-")).Exit, Is.Zero);
            Assert.That(await _world.Dom0.DirectoryAsync($"/local/domain/0/backend/vusb/{await DomIdOf("alpha")}"), Is.Empty, "prepare does nothing");

            Console.SetIn(new StringReader(xml));
            (int exit, string output, string err) = await RunAsync("libvirt-hook", "alpha", "started", "begin", "-");
            Assert.That(exit, Is.Zero, err);
            Assert.That(output, Does.Contain($"attached {_stick} to controller 0 port 3"));
            Assert.That(await _world.Dom0.ReadAsync($"/local/domain/0/backend/vusb/{await DomIdOf("alpha")}/0/port/3"), Is.EqualTo(_stick));

            Console.SetIn(new StringReader("<domain><metadata><x:assign xmlns:x='https://xenpvusb.org/libvirt/1' match='colour=red'/></metadata></domain>"));
            (exit, _, err) = await RunAsync("libvirt-hook", "alpha", "reconnect", "begin", "-");
            Assert.That(exit, Is.EqualTo(1));
            Assert.That(err, Does.Contain("<xenpvusb:assign> number 1"));

            Console.SetIn(new StringReader("<!DOCTYPE d [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><domain>&e;</domain>"));
            Assert.That((await RunAsync("libvirt-hook", "alpha", "started", "begin", "-")).Exit, Is.EqualTo(1), "no DTDs, no external entities");
        }
        finally
        {
            Console.SetIn(oldIn);
            Environment.SetEnvironmentVariable("XENPVUSB_ASSIGNMENTS", null);
        }
    }

    [Test]
    public async Task Json_OfUsbListAndAssignableDevices_AndNamesFromUsbIds()
    {
        string ids = Path.Combine(_world.Directory, "usb.ids");
        File.WriteAllText(ids, "# test database\n1209  Generic\n\t5a01  Test Stick From usb.ids\n");
        Environment.SetEnvironmentVariable("XENPVUSB_USB_IDS", ids);
        try
        {
            Assert.That((await RunAsync("usb-hc-create", "alpha", "2", "2")).Exit, Is.Zero);
            Assert.That((await RunAsync("usb-attach", "alpha", "0", "1", _stick)).Exit, Is.Zero);
            (int exit, string output, _) = await RunAsync("usb-list", "alpha", "--json");
            Assert.That(exit, Is.Zero);
            using (var doc = System.Text.Json.JsonDocument.Parse(output))
            {
                System.Text.Json.JsonElement c = doc.RootElement.GetProperty("controllers")[0];
                Assert.That(c.GetProperty("ports").GetInt32(), Is.EqualTo(2));
                System.Text.Json.JsonElement port1 = c.GetProperty("portList")[0];
                Assert.That(port1.GetProperty("busid").GetString(), Is.EqualTo(_stick));
                Assert.That(port1.GetProperty("name").GetString(), Is.EqualTo("Generic Test Stick From usb.ids"));
                Assert.That(c.GetProperty("portList")[1].GetProperty("busid").ValueKind, Is.EqualTo(System.Text.Json.JsonValueKind.Null));
            }
            (exit, output, _) = await RunAsync("usb-list-assignable-devices", "--json");
            Assert.That(exit, Is.Zero);
            using (var doc = System.Text.Json.JsonDocument.Parse(output))
            {
                System.Text.Json.JsonElement kbd = doc.RootElement.EnumerateArray().Single();
                Assert.That(kbd.GetProperty("busid").GetString(), Is.EqualTo(_keyboard), "the stick is assigned, the hub never is");
                Assert.That(kbd.GetProperty("policy").GetProperty("allowed").GetBoolean(), Is.True);
                Assert.That(kbd.GetProperty("assignment").ValueKind, Is.EqualTo(System.Text.Json.JsonValueKind.Null));
            }
            (_, output, _) = await RunAsync("usb-list", "alpha");
            Assert.That(output, Does.Contain("ID 1209:5a01 Generic Test Stick From usb.ids"), "lsusb's names");
        }
        finally
        {
            Environment.SetEnvironmentVariable("XENPVUSB_USB_IDS", null);
        }
    }

    [Test]
    public async Task UsbAttach_OfADeviceThePolicyDenies_IsRefusedWithTheLine()
    {
        string policy = Path.Combine(_world.Directory, "usb-policy.conf");
        File.WriteAllText(policy, "# no keyboards\nDENY:class=03 prot=01\nALLOW:\n");
        Environment.SetEnvironmentVariable("XENPVUSB_POLICY", policy);
        try
        {
            Assert.That((await RunAsync("usb-hc-create", "alpha", "2", "2")).Exit, Is.Zero);
            (int exit, _, string err) = await RunAsync("usb-attach", "alpha", "0", "1", _keyboard);
            Assert.That(exit, Is.EqualTo(1));
            Assert.That(err, Does.Contain("denied by policy line 2 (DENY:class=03 prot=01)"));
            Assert.That((await RunAsync("usb-attach", "alpha", "0", "1", _stick)).Exit, Is.Zero);
            (_, string output, _) = await RunAsync("usb-list-assignable-devices");
            Assert.That(output, Does.Contain("[denied by policy line 2"));
        }
        finally
        {
            Environment.SetEnvironmentVariable("XENPVUSB_POLICY", null);
        }
    }

    private async Task<ushort> DomIdOf(string name)
    {
        foreach (string d in await _world.Dom0.DirectoryAsync("/local/domain"))
        {
            if (await _world.Dom0.ReadAsync($"/local/domain/{d}/name") == name)
            {
                return ushort.Parse(d, System.Globalization.CultureInfo.InvariantCulture);
            }
        }
        throw new InvalidOperationException(name);
    }

    private static string[] AssignmentRules(string file) =>
        XenPvUsb.Toolstack.AssignmentFile.Load(file).Rules.Select(r => r.Format()).ToArray();
}
