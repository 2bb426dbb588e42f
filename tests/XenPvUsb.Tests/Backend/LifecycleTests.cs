using XenPvUsb.Simulation.Devices;
using XenPvUsb.Simulation.Guest;
using XenPvUsb.Simulation.Host;
using XenPvUsb.Tests.Support;
using XenPvUsb.Usb;

namespace XenPvUsb.Tests.Backend;

/// <summary>The xenbus life of a controller: InitWait, Connected, toolstack teardown, domain death, frontend reconnect.</summary>
[TestFixture]
public sealed class LifecycleTests
{
    private SimWorld _world = null!;

    [SetUp]
    public async Task StartWorld() => _world = await SimWorld.StartAsync();

    [TearDown]
    public async Task StopWorld() => await _world.DisposeAsync();

    [Test]
    public async Task NewController_ReachesInitWait_BeforeAnyFrontend()
    {
        SimulatedGuest g = await _world.Host.CreateGuestAsync("g");
        int devId = await _world.Toolstack.CreateControllerAsync(g.Id, 2, 8);
        Assert.That(await _world.Dom0.ReadAsync($"/local/domain/0/backend/vusb/{g.Id.Value}/{devId}/state"), Is.EqualTo("2"));
    }

    [Test]
    public async Task InvalidControllerNodes_AreRefusedWithClosed()
    {
        SimulatedGuest g = await _world.Host.CreateGuestAsync("g");
        string be = $"/local/domain/0/backend/vusb/{g.Id.Value}/0";
        await _world.Dom0.TransactAsync(async tx =>
        {
            await _world.Dom0.WriteAsync($"{be}/frontend", $"/local/domain/{g.Id.Value}/device/vusb/0", tx);
            await _world.Dom0.WriteAsync($"{be}/usb-ver", "2", tx);
            await _world.Dom0.WriteAsync($"{be}/num-ports", "40", tx);
            await _world.Dom0.WriteAsync($"{be}/state", "1", tx);
        });
        await _world.WaitForStateAsync($"{be}/state", "6");
    }

    [Test]
    public async Task Destroy_BackendAnswersClosed_AndReleasesTheDevice()
    {
        string stick = _world.PlugStick();
        GuestHandle g = await _world.AddGuestAsync("g", 2, 2, stick);
        Assert.That(_world.Host.Usb.GetDevice(stick)!.IsClaimed, Is.True);
        Assert.That(await _world.Toolstack.DestroyControllerAsync(g.Id, g.DevId), Is.True, "the backend reached Closed within libxl's 10 s");
        Assert.That(_world.Host.Usb.GetDevice(stick)!.IsClaimed, Is.False);
        Assert.That(g.Frontend.IsConnected, Is.False, "the frontend saw Closing and shut down");
    }

    [Test]
    public async Task DomainDeath_ReleasesDevicesAndController_AndRemovesItsNodes()
    {
        string stick = _world.PlugStick();
        GuestHandle g = await _world.AddGuestAsync("g", 2, 2, stick);
        string be = $"/local/domain/0/backend/vusb/{g.Id.Value}";
        await _world.Host.DestroyGuestAsync(g.Guest);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        while (_world.Host.Usb.GetDevice(stick)!.IsClaimed || _world.Registry.Count != 0 || await _world.Dom0.ReadAsync(be) is not null)
        {
            await Task.Delay(10, cts.Token);
        }
        TestContext.Out.WriteLine($"device back and nodes gone {clock.ElapsedMilliseconds} ms after the domain died");
        Assert.That(clock.Elapsed, Is.LessThan(TimeSpan.FromSeconds(2)), "handed back within 2 s");
        Assert.That(await _world.Dom0.ReadAsync("/local/domain/0/backend/vusb"), Is.Not.Null, "only the dead domain's directory goes");

        // Nothing claims it again for the dead domain: not later, not when it is re-plugged.
        await Task.Delay(300);
        Assert.That(_world.Host.Usb.GetDevice(stick)!.IsClaimed, Is.False);
        using IUsbHostDevice mine = _world.Host.Usb.Open(stick);
        Assert.That(mine, Is.Not.Null, "dom0 has the device back");
    }

    [Test]
    public async Task DomainDeath_LeavesTheNodesOfControllersLibxlMade_ToLibxl()
    {
        string stick = _world.PlugStick();
        GuestHandle g = await _world.AddGuestAsync("g", 2, 2, stick);
        await _world.Dom0.WriteAsync($"/libxl/{g.Id.Value}/device/vusb/{g.DevId}/type", "pv");
        string be = $"/local/domain/0/backend/vusb/{g.Id.Value}/{g.DevId}";
        await _world.Dom0.WriteAsync($"{be}/libxl-probe", "1");
        // The simulated libxl removes what it has records of itself; check the backend did not race it.
        await _world.Host.DestroyGuestAsync(g.Guest);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        while (_world.Host.Usb.GetDevice(stick)!.IsClaimed || _world.Registry.Count != 0)
        {
            await Task.Delay(10, cts.Token);
        }
        Assert.That(await _world.Dom0.ReadAsync(be), Is.Null);
    }

    [Test]
    public async Task StaleController_OfADomainThatDoesNotExist_IsRemovedAndNeverServed()
    {
        string stick = _world.PlugStick();
        await _world.RestartRegistryAsync(whileStopped: async () =>
        {
            // Left behind by a domain destroyed while the daemon was down.
            string be = "/local/domain/0/backend/vusb/77/0";
            await _world.Dom0.WriteAsync($"{be}/frontend", "/local/domain/77/device/vusb/0");
            await _world.Dom0.WriteAsync($"{be}/frontend-id", "77");
            await _world.Dom0.WriteAsync($"{be}/num-ports", "2");
            await _world.Dom0.WriteAsync($"{be}/usb-ver", "2");
            await _world.Dom0.WriteAsync($"{be}/online", "1");
            await _world.Dom0.WriteAsync($"{be}/state", "4");
            await _world.Dom0.WriteAsync($"{be}/port/1", stick);
        });
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        while (await _world.Dom0.ReadAsync("/local/domain/0/backend/vusb/77") is not null)
        {
            await Task.Delay(10, cts.Token);
        }
        Assert.That(_world.Registry.Count, Is.Zero);
        Assert.That(_world.Host.Usb.GetDevice(stick)!.IsClaimed, Is.False, "its device was never claimed");
        Assert.That(_world.Usb.HandedBack, Is.EqualTo(new[] { stick }), "and it goes back to dom0's drivers");
    }

    [Test]
    public async Task Removal_WithAnInterruptUrbInFlight_LetsTheFrontendFinishItsTeardown()
    {
        // libxl writes Closing itself, so xen-hcd starts usb_remove_hcd at once and unlinks the URB; a
        // device that takes a moment to give the URB back must still get it answered.
        string kbd = _world.Plug(new HidKeyboardDevice());
        _world.Usb.Wrap(kbd, d => new SlowUsbDevice(d) { CancelDelay = TimeSpan.FromMilliseconds(300) });
        GuestHandle g = await _world.AddGuestAsync("g", 2, 2, kbd);
        GuestUsbDevice k = await GuestUsbDevice.EnumerateAsync(g.Frontend, 1, 2);
        Task<UrbResult> pending = k.InterruptAsync(0x81, new byte[8]);
        await Task.Delay(20);
        Assert.That(g.Frontend.InFlightRequestIds(), Has.Count.EqualTo(1));

        Assert.That(await _world.Toolstack.DestroyControllerAsync(g.Id, g.DevId), Is.True);
        await g.Frontend.ShutdownCompleted.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.That(g.Frontend.HungOnRemoval, Is.False, "usb_remove_hcd got an answer for every URB");
        Assert.That((await pending.WaitAsync(TimeSpan.FromSeconds(5))).Status, Is.Not.EqualTo(0));
        Assert.That(_world.Host.Usb.GetDevice(kbd)!.IsClaimed, Is.False);
    }

    [Test]
    public async Task FrontendReinitialising_GetsAFreshWorkingController()
    {
        string stick = _world.PlugStick();
        GuestHandle g = await _world.AddGuestAsync("g", 2, 2, stick);
        string fe = $"/local/domain/{g.Id.Value}/device/vusb/{g.DevId}";
        string be = $"/local/domain/0/backend/vusb/{g.Id.Value}/{g.DevId}";

        await g.Frontend.DisposeAsync();
        await _world.WaitForStateAsync($"{be}/state", "6");

        // The guest's driver probes again (module reload): Initialising, then a new connection.
        Task<SimulatedFrontend> again = g.Guest.ConnectFrontendAsync(g.DevId);
        await g.Guest.Store.WriteAsync($"{fe}/state", "1");
        SimulatedFrontend fresh = await again;
        await _world.WaitForStateAsync($"{be}/state", "4");
        await fresh.WaitForPortAsync(1, connected: true, TimeSpan.FromSeconds(5));
        var storage = new GuestMassStorage(await GuestUsbDevice.EnumerateAsync(fresh, 1, 2));
        await storage.ReadCapacityAsync();
        Assert.That(storage.BlockCount, Is.EqualTo(2048));
    }
}
