using XenPvUsb.Simulation.Devices;
using XenPvUsb.Simulation.Guest;
using XenPvUsb.Tests.Support;
using static global::XenPvUsb.Usbif.Usbif;

namespace XenPvUsb.Tests.Backend;

/// <summary>
/// A restarted daemon (systemctl restart, or SIGKILL and systemd's restart) takes over every connected
/// controller from the shared rings and its recovery journal: the guest keeps its devices and
/// addresses, requests in flight at the end are answered once with an error its driver recovers
/// from, and nothing is announced twice.
/// </summary>
[TestFixture]
public sealed class RestartTests
{
    private SimWorld _world = null!;

    [SetUp]
    public async Task StartWorld() => _world = await SimWorld.StartAsync();

    [TearDown]
    public async Task StopWorld() => await _world.DisposeAsync();

    private async Task<(GuestHandle Guest, GuestMassStorage Storage, byte[] Content)> GuestWithStickAsync(string name = "g")
    {
        (string busId, byte[] content) = _world.PlugStickWithContent(seed: 7);
        GuestHandle g = await _world.AddGuestAsync(name, 4, 2, busId);
        var storage = new GuestMassStorage(await GuestUsbDevice.EnumerateAsync(g.Frontend, 1, 5));
        await storage.ReadCapacityAsync();
        return (g, storage, content);
    }

    private static async Task AssertReadsWholeAsync(GuestMassStorage storage, byte[] content)
    {
        byte[] buf = new byte[content.Length];
        for (int off = 0; off < content.Length; off += 64 * 1024)
        {
            await storage.ReadAsync((uint)(off / 512), buf.AsMemory(off, 64 * 1024)).WaitAsync(TimeSpan.FromSeconds(10));
        }
        Assert.That(buf.AsSpan().SequenceEqual(content), Is.True, "the whole stick reads back right");
    }

    [Test]
    public async Task CleanRestart_IdleGuest_KeepsItsDevice_WithNoCommandAndNoNewEnumeration()
    {
        (GuestHandle g, GuestMassStorage storage, byte[] content) = await GuestWithStickAsync();
        string state = $"/local/domain/0/backend/vusb/{g.Id.Value}/{g.DevId}/state";
        await _world.RestartRegistryAsync();
        Assert.That(await _world.Dom0.ReadAsync(state), Is.EqualTo("4"), "still Connected: nothing was torn down");
        // The guest's device, at the address it gave it, goes on as before.
        await AssertReadsWholeAsync(storage, content);
        Assert.That(g.Frontend.ProtocolError, Is.Null);
        Assert.That(g.Frontend.PortEvents.TryRead(out PortEvent e), Is.False, $"no port event after the restart ({e})");
    }

    [Test]
    public async Task Crash_AnswersWhatWasInFlight_Once_WithAnErrorTheDriverRecoversFrom()
    {
        (GuestHandle g, GuestMassStorage storage, byte[] content) = await GuestWithStickAsync();
        string kbd = _world.Plug(new HidKeyboardDevice());
        await _world.Toolstack.AttachAsync(g.Id, g.DevId, 2, kbd);
        await g.Frontend.WaitForPortAsync(2, true, TimeSpan.FromSeconds(5));
        while (g.Frontend.PortEvents.TryRead(out _))
        {
        }
        GuestUsbDevice k = await GuestUsbDevice.EnumerateAsync(g.Frontend, 2, 6);
        Task<UrbResult> keyboardRead = k.InterruptAsync(0x81, new byte[8]);
        await Task.Delay(20);
        Assert.That(keyboardRead.IsCompleted, Is.False);

        await _world.CrashAndRestartAsync();

        UrbResult r = await keyboardRead.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.That(r.Status, Is.EqualTo(USBIF_STATUS_IOERROR), "answered by the successor with -EPROTO (usbhid retries)");
        Assert.That(g.Frontend.ProtocolError, Is.Null, "never an answer for an id not in flight, never two");
        // The keyboard works again with its old address, and so does the stick.
        Task<UrbResult> again = k.InterruptAsync(0x81, new byte[8]);
        ((HidKeyboardDevice)_world.Host.Usb.GetDevice(kbd)!).Type("a");
        Assert.That((await again.WaitAsync(TimeSpan.FromSeconds(5))).Status, Is.EqualTo(USBIF_STATUS_OK));
        await AssertReadsWholeAsync(storage, content);
        Assert.That(g.Frontend.PortEvents.TryRead(out _), Is.False, "nothing re-announced");
    }

    [Test]
    public async Task CrashMidRead_TheReadFailsOrCompletes_NeverHangs_ThenTheGuestReadsWholeAgain()
    {
        (GuestHandle g, GuestMassStorage storage, byte[] content) = await GuestWithStickAsync();
        using var stop = new CancellationTokenSource();
        Task reading = Task.Run(async () =>
        {
            byte[] buf = new byte[16 * 1024];
            while (!stop.IsCancellationRequested)
            {
                for (uint lba = 0; lba < content.Length / 512 && !stop.IsCancellationRequested; lba += 32)
                {
                    await storage.ReadAsync(lba, buf);
                }
            }
        });
        await Task.Delay(100);
        Assert.That(reading.IsCompleted, Is.False, "reading when the daemon dies");
        await _world.CrashAndRestartAsync();
        await Task.Delay(100);
        stop.Cancel();
        try
        {
            await reading.WaitAsync(TimeSpan.FromSeconds(10));
        }
        catch (IOException)
        {
            // The command in flight failed (-EPROTO): what usb-storage meets, and recovers from with a reset.
            await storage.ResetRecoveryAsync();
        }
        Assert.That(g.Frontend.ProtocolError, Is.Null);
        await AssertReadsWholeAsync(storage, content);
    }

    [Test]
    public async Task DeviceUnpluggedWhileTheDaemonWasDown_IsUnpluggedForTheGuestAfterwards()
    {
        (GuestHandle g, _, _) = await GuestWithStickAsync();
        string busId = _world.Registry.Find(g.Id, g.DevId)!.AssignedBusId(1)!;
        await _world.CrashAndRestartAsync(whileDown: () =>
        {
            _world.Host.Usb.Unplug(busId);
            return Task.CompletedTask;
        });
        await g.Frontend.WaitForPortAsync(1, connected: false, TimeSpan.FromSeconds(5));
        Assert.That(g.Frontend.ProtocolError, Is.Null);
    }

    [Test]
    public async Task DeviceAssignedWhileTheDaemonWasDown_IsPluggedForTheGuestAfterwards()
    {
        (GuestHandle g, _, _) = await GuestWithStickAsync();
        string kbd = _world.Plug(new HidKeyboardDevice());
        await _world.CrashAndRestartAsync(whileDown: async () =>
            await _world.Dom0.WriteAsync($"/local/domain/0/backend/vusb/{g.Id.Value}/{g.DevId}/port/3", kbd));
        await g.Frontend.WaitForPortAsync(3, connected: true, TimeSpan.FromSeconds(5));
        Assert.That(g.Frontend.PortSpeed(1), Is.Not.Zero, "the stick stays");
    }

    [Test]
    public async Task DomainDestroyedWhileTheDaemonWasDown_IsNotServedAgain_AndItsDeviceStaysWithDom0()
    {
        (GuestHandle g, _, _) = await GuestWithStickAsync();
        string busId = _world.Registry.Find(g.Id, g.DevId)!.AssignedBusId(1)!;
        await _world.CrashAndRestartAsync(whileDown: () => _world.Host.DestroyGuestAsync(g.Guest));
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        while (await _world.Dom0.ReadAsync($"/local/domain/0/backend/vusb/{g.Id.Value}") is not null)
        {
            await Task.Delay(10, cts.Token);
        }
        Assert.That(_world.Registry.Count, Is.Zero);
        Assert.That(_world.Host.Usb.GetDevice(busId)!.IsClaimed, Is.False);
        Assert.That(Directory.GetFiles(_world.StateDirectory), Is.Empty.Or.All.Not.Contain($"vusb-{g.Id.Value}-"));
    }

    [Test]
    public async Task JournalOfAnotherConnection_IsNotTrusted_TheControllerIsServedAfresh()
    {
        (GuestHandle g, _, _) = await GuestWithStickAsync();
        await _world.CrashAndRestartAsync(whileDown: async () =>
        {
            // The frontend's nodes now name other rings than the journal's (a guest that reconnected meanwhile).
            string fe = $"/local/domain/{g.Id.Value}/device/vusb/{g.DevId}";
            string? urb = await g.Guest.Store.ReadAsync($"{fe}/urb-ring-ref");
            await g.Guest.Store.WriteAsync($"{fe}/urb-ring-ref", (uint.Parse(urb!, System.Globalization.CultureInfo.InvariantCulture) + 1000).ToString(System.Globalization.CultureInfo.InvariantCulture));
        });
        // Not adopted: served afresh, which for a frontend that stays Connected means InitWait.
        await _world.WaitForStateAsync($"/local/domain/0/backend/vusb/{g.Id.Value}/{g.DevId}/state", "2");
    }
}
