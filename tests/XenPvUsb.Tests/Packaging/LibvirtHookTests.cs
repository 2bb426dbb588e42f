using System.Diagnostics;
using XenPvUsb.Simulation.Host;
using XenPvUsb.Tests.Support;

namespace XenPvUsb.Tests.Packaging;

/// <summary>
/// packaging/libvirt/libxl run as libvirtd runs /etc/libvirt/hooks/libxl: a separate process, the domain name,
/// operation, sub-operation and extra argument, the domain XML on stdin; the real CLI binary behind it, against the
/// simulated host with the real backend answering.
/// </summary>
[TestFixture]
[NonParallelizable]
public sealed class LibvirtHookTests
{
    private SimWorld _world = null!;

    [SetUp]
    public async Task StartWorld() => _world = await SimWorld.StartAsync();

    [TearDown]
    public async Task StopWorld() => await _world.DisposeAsync();

    private static string HookPath() => RepoFile.Find(Path.Combine("packaging", "libvirt", "libxl"));

    private async Task<(int Exit, string Output)> RunHookAsync(string conf, string xml, params string[] args)
    {
        var psi = new ProcessStartInfo("/bin/sh") { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add(HookPath());
        foreach (string a in args)
        {
            psi.ArgumentList.Add(a);
        }
        psi.Environment["XENPVUSB"] = Path.Combine(AppContext.BaseDirectory, "xenpvusb");
        psi.Environment["XENSTORED_PATH"] = _world.Host.Dom0SocketPath;
        psi.Environment["XENPVUSB_SYSFS"] = _world.Host.SysfsRoot;
        psi.Environment["XENPVUSB_ASSIGNMENTS"] = conf;
        psi.Environment["XENPVUSB_POLICY"] = Path.Combine(_world.Directory, "no-policy.conf");
        using Process p = Process.Start(psi)!;
        await p.StandardInput.WriteAsync(xml);
        p.StandardInput.Close();
        Task<string> output = p.StandardOutput.ReadToEndAsync();
        Task<string> error = p.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await p.WaitForExitAsync(cts.Token);
        return (p.ExitCode, await output + await error);
    }

    [Test]
    public async Task Started_GivesTheDomainItsAssignments_FromTheFileAndItsXml_OtherOperationsNothing()
    {
        string stick = _world.PlugStick();
        string keyboard = _world.Plug(new XenPvUsb.Simulation.Devices.HidKeyboardDevice());
        SimulatedGuest guest = await _world.Host.CreateGuestAsync("lv1");
        string conf = Path.Combine(_world.Directory, "assignments.conf");
        File.WriteAllText(conf, "lv1 serial=XPU0001 controller=2:4\n");
        string xml = """
            <domain type='xen' id='1'>
              <name>lv1</name>
              <uuid>4dea22b3-1d52-d8f3-2516-782e98ab3fa0</uuid>
              <metadata>
                <xenpvusb:assignments xmlns:xenpvusb='https://xenpvusb.org/libvirt/1'>
                  <xenpvusb:assign match='class=03' port='4' force='yes'/>
                </xenpvusb:assignments>
              </metadata>
              <os><type>linux</type></os>
            </domain>
            """;

        foreach (string op in new[] { "prepare", "start" })
        {
            (int exit, string output) = await RunHookAsync(conf, xml, "lv1", op, "begin", "-");
            Assert.That(exit, Is.Zero, output);
        }
        Assert.That(await _world.Dom0.DirectoryAsync($"/local/domain/0/backend/vusb/{guest.Id.Value}"), Is.Empty, "before started: nothing");

        (int code, string said) = await RunHookAsync(conf, xml, "lv1", "started", "begin", "-");
        Assert.That(code, Is.Zero, said);
        string be = $"/local/domain/0/backend/vusb/{guest.Id.Value}/0";
        Assert.That(await _world.Dom0.ReadAsync($"{be}/num-ports"), Is.EqualTo("4"));
        Assert.That(await _world.Dom0.ReadAsync($"{be}/port/1"), Is.EqualTo(stick), said);
        Assert.That(await _world.Dom0.ReadAsync($"{be}/port/4"), Is.EqualTo(keyboard), "the XML's rule, on its port");

        (code, said) = await RunHookAsync(conf, xml, "lv1", "stopped", "end", "-");
        Assert.That(code, Is.Zero, said);
        Assert.That(said, Is.Empty);
    }
}
