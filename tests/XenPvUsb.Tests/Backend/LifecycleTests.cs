using XenPvUsb.Simulation.Devices;
using XenPvUsb.Simulation.Guest;
using XenPvUsb.Simulation.Host;
using XenPvUsb.Tests.Support;

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
    public async Task DomainDeath_ReleasesDevicesAndController()
    {
        string stick = _world.PlugStick();
        GuestHandle g = await _world.AddGuestAsync("g", 2, 2, stick);
        await _world.Host.DestroyGuestAsync(g.Guest);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        while (_world.Host.Usb.GetDevice(stick)!.IsClaimed || _world.Registry.Count != 0)
        {
            await Task.Delay(10, cts.Token);
        }
        Assert.That(_world.Host.Usb.Open(stick), Is.Not.Null, "dom0 has the device back");
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
