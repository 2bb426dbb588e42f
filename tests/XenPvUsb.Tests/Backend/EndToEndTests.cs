using System.Security.Cryptography;
using XenPvUsb.Backend;
using XenPvUsb.Simulation.Devices;
using XenPvUsb.Simulation.Guest;
using XenPvUsb.Tests.Support;
using XenPvUsb.Usb;
using static global::XenPvUsb.Usbif.Usbif;

namespace XenPvUsb.Tests.Backend;

/// <summary>The real backend serving a simulated guest: enumeration, data, hotplug, unlink.</summary>
[TestFixture(GrantMode.Copy)]
[TestFixture(GrantMode.Map)]
public sealed class EndToEndTests
{
    private readonly GrantMode _grantMode;

    private SimWorld _world = null!;

    public EndToEndTests(GrantMode grantMode)
    {
        _grantMode = grantMode;
    }

    [SetUp]
    public async Task StartWorld()
    {
        _world = await SimWorld.StartAsync();
        _world.GrantMode = _grantMode;
    }

    [TearDown]
    public async Task StopWorld() => await _world.DisposeAsync();

    [Test]
    public async Task Guest_EnumeratesStickAndKeyboard()
    {
        string stick = _world.PlugStick();
        string kbd = _world.Plug(new HidKeyboardDevice());
        GuestHandle g = await _world.AddGuestAsync("g1", 8, 2, stick, kbd);

        GuestUsbDevice s = await GuestUsbDevice.EnumerateAsync(g.Frontend, 1, 2);
        GuestUsbDevice k = await GuestUsbDevice.EnumerateAsync(g.Frontend, 2, 3);

        Assert.That((s.VendorId, s.ProductId), Is.EqualTo(((ushort)0x1209, (ushort)0x5a01)));
        Assert.That(s.InterfaceClass, Is.EqualTo(8));
        Assert.That(s.Speed, Is.EqualTo(USBIF_SPEED_HIGH));
        Assert.That(s.Product, Is.EqualTo("Emulated Stick"));
        Assert.That((k.VendorId, k.ProductId), Is.EqualTo(((ushort)0x1209, (ushort)0x5a02)));
        Assert.That(k.InterfaceClass, Is.EqualTo(3));
        Assert.That(k.Speed, Is.EqualTo(USBIF_SPEED_FULL));
        Assert.That(k.FindEndpoint(UsbTransferType.Interrupt, true), Is.Not.Null);
    }

    [Test]
    public async Task GuestPortReset_ResetsTheDevice_WhenTheGuestAddressesItAgain()
    {
        string image = Path.Combine(_world.Directory, "reset.img");
        StickImage.Create(image, 1024 * 1024, seed: 5);
        var stick = new MassStorageDevice(image, readOnly: true);
        GuestHandle g = await _world.AddGuestAsync("g1", 4, 2, _world.Plug(stick));
        var storage = new GuestMassStorage(await GuestUsbDevice.EnumerateAsync(g.Frontend, 1, 2));
        await storage.ReadCapacityAsync();
        Assert.That(stick.ResetCount, Is.Zero, "a first enumeration does not reset the device");

        // usb_reset_device in the guest: xen-hcd resets the port itself, then usbcore enumerates from address 0.
        storage = new GuestMassStorage(await GuestUsbDevice.EnumerateAsync(g.Frontend, 1, 3));
        Assert.That(stick.ResetCount, Is.EqualTo(1));
        byte[] data = new byte[64 * 1024];
        await storage.ReadCapacityAsync();
        await storage.ReadAsync(0, data);
        Assert.That(data, Is.EqualTo(File.ReadAllBytes(image)[..data.Length]));
        VusbController c = _world.Registry.Find(g.Id, g.DevId)!.Controller!;
        Assert.That((await _world.Loop.InvokeAsync(() => c.Statistics)).DeviceResets, Is.EqualTo(1));
    }

    [Test]
    public async Task Guest_ReadsWholeStick_WithMatchingChecksum()
    {
        string image = Path.Combine(_world.Directory, "read.img");
        StickImage.Create(image, 4 * 1024 * 1024, seed: 7);
        string stick = _world.Plug(new MassStorageDevice(image, readOnly: true));
        GuestHandle g = await _world.AddGuestAsync("g1", 4, 2, stick);
        var storage = new GuestMassStorage(await GuestUsbDevice.EnumerateAsync(g.Frontend, 1, 5));
        await storage.ReadCapacityAsync();
        Assert.That(storage.BlockCount * storage.BlockSize, Is.EqualTo(4 * 1024 * 1024));

        byte[] all = new byte[storage.BlockCount * storage.BlockSize];
        for (int lba = 0; lba < storage.BlockCount; lba += GuestMassStorage.BlocksPerCommand)
        {
            int n = (int)Math.Min(GuestMassStorage.BlocksPerCommand, storage.BlockCount - lba);
            await storage.ReadAsync((uint)lba, all.AsMemory(lba * 512, n * 512));
        }
        Assert.That(SHA256.HashData(all), Is.EqualTo(SHA256.HashData(await File.ReadAllBytesAsync(image))));
    }

    [Test]
    public async Task DataPath_FollowsTheControllersGrantMode_AndUnmapsEverything()
    {
        string stick = _world.PlugStick(bytes: 512 * 1024, seed: 4);
        GuestHandle g = await _world.AddGuestAsync("g1", 2, 2, stick);
        var storage = new GuestMassStorage(await GuestUsbDevice.EnumerateAsync(g.Frontend, 1, 2));
        await storage.ReadCapacityAsync();
        byte[] data = new byte[64 * 1024];
        await storage.ReadAsync(0, data);
        await storage.WriteAsync(200, data);
        await _world.DrainLoopAsync();

        VusbController c = _world.Registry.Find(g.Id, g.DevId)!.Controller!;
        UrbStatistics stats = await _world.Loop.InvokeAsync(() => c.Statistics);
        Assert.That(c.GrantMode, Is.EqualTo(_grantMode));
        Assert.That(stats.Completed, Is.GreaterThan(6), "enumeration, CBWs, data and CSWs");
        Assert.That(stats.Bytes, Is.GreaterThanOrEqualTo(2 * data.Length));
        if (_grantMode == GrantMode.Map)
        {
            // Bulk data and the CBW/CSW (bulk too) are mapped; control transfers never are.
            Assert.That(stats.Mapped, Is.InRange(6, stats.Completed - 1));
        }
        else
        {
            Assert.That(stats.Mapped, Is.Zero);
        }
        Assert.That(g.Guest.Grants.MappedGrants, Is.EqualTo(2), "only the two ring pages stay mapped");
    }

    [Test]
    public async Task Guest_WritesThenReadsBack()
    {
        string image = Path.Combine(_world.Directory, "rw.img");
        StickImage.Create(image, 1024 * 1024, seed: 3);
        string stick = _world.Plug(new MassStorageDevice(image, readOnly: false));
        GuestHandle g = await _world.AddGuestAsync("g1", 2, 2, stick);
        var storage = new GuestMassStorage(await GuestUsbDevice.EnumerateAsync(g.Frontend, 1, 2));
        await storage.ReadCapacityAsync();

        byte[] data = new byte[100 * 512];
        new Random(42).NextBytes(data);
        await storage.WriteAsync(300, data);
        byte[] back = new byte[data.Length];
        await storage.ReadAsync(300, back);
        Assert.That(SHA256.HashData(back), Is.EqualTo(SHA256.HashData(data)));

        byte[] onDisk = new byte[data.Length];
        using (FileStream f = File.OpenRead(image))
        {
            f.Position = 300 * 512;
            f.ReadExactly(onDisk);
        }
        Assert.That(onDisk, Is.EqualTo(data), "the write reached the image");
    }

    [Test]
    public async Task SixtyFourKiBUrb_WithBufferLengthTruncatedToZero_IsServed()
    {
        // xen-hcd puts a 65536-byte buffer (16 pages) on the ring with buffer_length = 0 (u16).
        string image = Path.Combine(_world.Directory, "big.img");
        StickImage.Create(image, 1024 * 1024, seed: 21);
        string stick = _world.Plug(new MassStorageDevice(image, readOnly: true));
        GuestHandle g = await _world.AddGuestAsync("g1", 2, 2, stick);
        var storage = new GuestMassStorage(await GuestUsbDevice.EnumerateAsync(g.Frontend, 1, 2));
        await storage.ReadCapacityAsync();
        byte[] data = new byte[65536];
        await storage.ReadAsync(16, data);
        byte[] expected = new byte[65536];
        using (FileStream f = File.OpenRead(image))
        {
            f.Position = 16 * 512;
            f.ReadExactly(expected);
        }
        Assert.That(data, Is.EqualTo(expected));
    }

    [Test]
    public async Task Guest_ReadsAtUnalignedBufferOffset()
    {
        string stick = _world.PlugStick(bytes: 256 * 1024, seed: 9);
        GuestHandle g = await _world.AddGuestAsync("g1", 2, 2, stick);
        GuestUsbDevice dev = await GuestUsbDevice.EnumerateAsync(g.Frontend, 1, 2);
        byte[] desc = new byte[18];
        var pipe = global::XenPvUsb.Usbif.UsbifPipe.Create(1, 2, 0, true, UsbTransferType.Control);
        UrbResult r = await g.Frontend.SubmitAsync(pipe, GuestUsbDevice.Setup(0x80, 6, 0x0100, 0, 18), desc, pageOffset: 4090);
        Assert.That(r.Status, Is.EqualTo(USBIF_STATUS_OK));
        Assert.That(r.ActualLength, Is.EqualTo(18));
        Assert.That(desc[1], Is.EqualTo(1), "device descriptor type, split across two guest pages");
    }

    [Test]
    public async Task Keyboard_InterruptIn_CompletesWhenTyped()
    {
        var keyboard = new HidKeyboardDevice();
        string kbd = _world.Plug(keyboard);
        GuestHandle g = await _world.AddGuestAsync("g1", 2, 2, kbd);
        GuestUsbDevice k = await GuestUsbDevice.EnumerateAsync(g.Frontend, 1, 2);
        byte[] report = new byte[8];
        Task<UrbResult> pending = k.InterruptAsync(0x81, report);
        await Task.Delay(50);
        Assert.That(pending.IsCompleted, Is.False, "nothing typed yet");
        keyboard.Type("a");
        UrbResult r = await pending.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.That(r.Status, Is.EqualTo(USBIF_STATUS_OK));
        Assert.That(report[2], Is.EqualTo(0x04), "usage id of 'a'");
    }

    [Test]
    public async Task DetachWhileInFlight_CompletesUrbWithError_ReportsDisconnect_LeaksNothing()
    {
        string kbd = _world.Plug(new HidKeyboardDevice());
        GuestHandle g = await _world.AddGuestAsync("g1", 2, 2, kbd);
        GuestUsbDevice k = await GuestUsbDevice.EnumerateAsync(g.Frontend, 1, 2);
        Task<UrbResult> pending = k.InterruptAsync(0x81, new byte[8]);
        await Task.Delay(20);

        await _world.Toolstack.DetachAsync(g.Id, g.DevId, 1);
        UrbResult r = await pending.WaitAsync(TimeSpan.FromSeconds(5));
        await g.Frontend.WaitForPortAsync(1, connected: false, TimeSpan.FromSeconds(5));

        Assert.That(r.Status, Is.Not.EqualTo(USBIF_STATUS_OK));
        VusbController c = _world.Registry.Find(g.Id, g.DevId)!.Controller!;
        Assert.That(await _world.Loop.InvokeAsync(() => c.InFlight), Is.Zero);
        Assert.That(g.Guest.Grants.MappedGrants, Is.EqualTo(2), "only the two ring pages stay mapped");
        Assert.That(_world.Host.Usb.Open(kbd), Is.Not.Null, "the device was released back to the host");
        Assert.That(g.Frontend.ProtocolError, Is.Null);
    }

    [Test]
    public async Task Unlink_CancelsInFlightUrb()
    {
        string kbd = _world.Plug(new HidKeyboardDevice());
        GuestHandle g = await _world.AddGuestAsync("g1", 2, 2, kbd);
        GuestUsbDevice k = await GuestUsbDevice.EnumerateAsync(g.Frontend, 1, 2);
        using var cts = new CancellationTokenSource();
        Task<UrbResult> pending = k.InterruptAsync(0x81, new byte[8], cts.Token);
        await Task.Delay(20);
        await cts.CancelAsync();
        UrbResult r = await pending.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.That(r.Status, Is.EqualTo(USBIF_STATUS_SHUTDOWN));
        VusbController c = _world.Registry.Find(g.Id, g.DevId)!.Controller!;
        Assert.That(await _world.Loop.InvokeAsync(() => c.InFlight), Is.Zero);
        Assert.That(g.Frontend.ProtocolError, Is.Null);

        // The port still works after the unlink.
        GuestUsbDevice again = k;
        byte[] status = new byte[2];
        Assert.That((await again.ControlAsync(0x80, 0, 0, 0, status)).Status, Is.EqualTo(USBIF_STATUS_OK));
    }

    [Test]
    public async Task PhysicalUnplug_ReportsDisconnect_AndReplugReattaches()
    {
        string stick = _world.PlugStick();
        GuestHandle g = await _world.AddGuestAsync("g1", 2, 2, stick);
        EmulatedUsbDevice dev = _world.Host.Usb.GetDevice(stick)!;
        _world.Host.Usb.Unplug(stick);
        await g.Frontend.WaitForPortAsync(1, connected: false, TimeSpan.FromSeconds(5));
        Assert.That(await _world.Dom0.ReadAsync($"/local/domain/0/backend/vusb/{g.Id.Value}/{g.DevId}/port/1"), Is.EqualTo(stick), "the assignment stays");

        string image = Path.Combine(_world.Directory, "replug.img");
        StickImage.Create(image, 512 * 1024, 5);
        _world.Host.Usb.Plug(stick, new MassStorageDevice(image));
        await g.Frontend.WaitForPortAsync(1, connected: true, TimeSpan.FromSeconds(5));
        GuestUsbDevice s = await GuestUsbDevice.EnumerateAsync(g.Frontend, 1, 4);
        Assert.That(s.InterfaceClass, Is.EqualTo(8));
        Assert.That(dev, Is.Not.Null);
    }
}
