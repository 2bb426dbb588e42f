using XenPvUsb.Backend;
using XenPvUsb.Simulation.Devices;
using XenPvUsb.Simulation.Guest;
using XenPvUsb.Tests.Support;
using static global::XenPvUsb.Usbif.Usbif;

namespace XenPvUsb.Tests.Backend;

/// <summary>A controller's usbfs memory in flight is capped; an idle controller gives its buffers back.</summary>
[TestFixture]
public sealed class BudgetTests
{
    private SimWorld _world = null!;

    [SetUp]
    public async Task StartWorld() => _world = await SimWorld.StartAsync();

    [TearDown]
    public async Task StopWorld() => await _world.DisposeAsync();

    [Test]
    public async Task RequestBeyondTheUsbfsBudget_WaitsForMemory_AndIsServedInOrderWhenSomeIsFree()
    {
        // One 8-byte interrupt IN costs 8 + 512 bytes of usbfs memory: a budget of 1000 holds one, not two.
        _world.UsbfsBudget = 1000;
        var kbd1 = new HidKeyboardDevice();
        var kbd2 = new HidKeyboardDevice();
        GuestHandle g = await _world.AddGuestAsync("g", 2, 2, _world.Plug(kbd1), _world.Plug(kbd2));
        GuestUsbDevice k1 = await GuestUsbDevice.EnumerateAsync(g.Frontend, 1, 2);
        GuestUsbDevice k2 = await GuestUsbDevice.EnumerateAsync(g.Frontend, 2, 3);
        VusbController c = _world.Registry.Find(g.Id, g.DevId)!.Controller!;

        Task<UrbResult> first = k1.InterruptAsync(0x81, new byte[8]);
        await Task.Delay(20);
        Task<UrbResult> second = k2.InterruptAsync(0x81, new byte[8]);
        await Task.Delay(20);
        Assert.That(await _world.Loop.InvokeAsync(() => c.DeviceBytesInFlight), Is.EqualTo(8 + VusbController.UsbfsOverheadPerUrb));
        Assert.That(await _world.Loop.InvokeAsync(() => c.Statistics.Deferred), Is.GreaterThan(0), "the second waits");
        Assert.That(kbd2.PendingCount, Is.Zero, "it never reached its device");

        kbd2.Type("b");
        await Task.Delay(20);
        Assert.That(second.IsCompleted, Is.False, "typing on the second keyboard cannot answer a request it does not have");

        kbd1.Type("a");
        Assert.That((await first.WaitAsync(TimeSpan.FromSeconds(5))).Status, Is.EqualTo(USBIF_STATUS_OK));
        // The first's memory came back: the second goes to its device now and gets the pending report.
        Assert.That((await second.WaitAsync(TimeSpan.FromSeconds(5))).Status, Is.EqualTo(USBIF_STATUS_OK));
        Assert.That(await _world.Loop.InvokeAsync(() => c.Statistics.PeakDeviceBytes), Is.LessThanOrEqualTo(1000));
        Assert.That(g.Frontend.ProtocolError, Is.Null);
    }

    [Test]
    public async Task ReadsLargerThanTheBudget_StillComplete_AndMergingStaysWithinIt()
    {
        _world.UsbfsBudget = 16 * 1024;
        (string busId, byte[] content) = _world.PlugStickWithContent(512 * 1024, seed: 3);
        GuestHandle g = await _world.AddGuestAsync("g", 2, 2, busId);
        var storage = new GuestMassStorage(await GuestUsbDevice.EnumerateAsync(g.Frontend, 1, 2)) { ScatterReads = true };
        await storage.ReadCapacityAsync();
        byte[] buf = new byte[content.Length];
        for (int off = 0; off < buf.Length; off += 64 * 1024)
        {
            await storage.ReadAsync((uint)(off / 512), buf.AsMemory(off, 64 * 1024)).WaitAsync(TimeSpan.FromSeconds(10));
        }
        Assert.That(buf.AsSpan().SequenceEqual(content), Is.True);
        VusbController c = _world.Registry.Find(g.Id, g.DevId)!.Controller!;
        UrbStatistics stats = await _world.Loop.InvokeAsync(() => c.Statistics);
        Assert.That(stats.PeakDeviceBytes, Is.LessThanOrEqualTo(16 * 1024), "merged transfers are cut to the budget");
        TestContext.Out.WriteLine($"peak usbfs memory {stats.PeakDeviceBytes} bytes, {stats.Merged} requests in {stats.MergedTransfers} merged transfers");
        Assert.That(stats.MergedTransfers, Is.GreaterThan(0), "still merged, in pieces");
    }

    [Test]
    public async Task IdleController_GivesItsBuffersBack_AndServesAgainAfterwards()
    {
        (string busId, byte[] content) = _world.PlugStickWithContent(256 * 1024, seed: 4);
        GuestHandle g = await _world.AddGuestAsync("g", 2, 2, busId);
        var storage = new GuestMassStorage(await GuestUsbDevice.EnumerateAsync(g.Frontend, 1, 2)) { ScatterReads = true };
        await storage.ReadCapacityAsync();
        byte[] buf = new byte[64 * 1024];
        await storage.ReadAsync(0, buf);
        VusbController c = _world.Registry.Find(g.Id, g.DevId)!.Controller!;
        long held = await _world.Loop.InvokeAsync(() => c.BufferBytesHeld);
        Assert.That(held, Is.GreaterThan(64 * 1024));
        TestContext.Out.WriteLine($"buffers held after a 64 KiB read: {held} bytes");

        await _world.Loop.InvokeAsync(() => c.ReleaseBuffersIfIdle(force: true));
        Assert.That(await _world.Loop.InvokeAsync(() => c.BufferBytesHeld), Is.Zero);

        await storage.ReadAsync(128, buf);
        Assert.That(buf.AsSpan().SequenceEqual(content.AsSpan(128 * 512, buf.Length)), Is.True);
    }
}
