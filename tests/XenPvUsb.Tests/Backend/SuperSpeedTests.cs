using System.Buffers.Binary;
using System.Security.Cryptography;
using XenPvUsb.Backend;
using XenPvUsb.Simulation.Devices;
using XenPvUsb.Simulation.Guest;
using XenPvUsb.Tests.Support;
using XenPvUsb.Usb;
using static global::XenPvUsb.Usbif.Usbif;

namespace XenPvUsb.Tests.Backend;

/// <summary>
/// A SuperSpeed stick (the emulated one has QEMU's USB 3 descriptors: bcdUSB 3.00, ep0 2^9, bulk 1024
/// with companions) served to a guest at high speed: the guest's checks are usbcore's (ep0 64 at high
/// speed or the enumeration fails, bulk 512, no SuperSpeed companions), the device keeps its real sizes.
/// </summary>
[TestFixture(GrantMode.Copy)]
[TestFixture(GrantMode.Map)]
public sealed class SuperSpeedTests
{
    private readonly GrantMode _grantMode;
    private SimWorld _world = null!;

    public SuperSpeedTests(GrantMode grantMode)
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

    private (string BusId, string Image) PlugSuperSpeedStick(long bytes = 2 * 1024 * 1024, int seed = 9)
    {
        string image = Path.Combine(_world.Directory, $"ss-{seed}.img");
        StickImage.Create(image, bytes, seed);
        var device = new MassStorageDevice(image, readOnly: false, UsbSpeed.Super);
        Assert.That(device.MaxPacketSize0, Is.EqualTo(9), "the device itself is a USB 3 device");
        return (_world.Plug(device), image);
    }

    [Test]
    public async Task SuperSpeedStick_EnumeratesAtHighSpeed_WithNoDescriptorWarnings_AndReadsWhole()
    {
        (string stick, string image) = PlugSuperSpeedStick();
        GuestHandle g = await _world.AddGuestAsync("g1", 4, 2, stick);
        GuestUsbDevice d = await GuestUsbDevice.EnumerateAsync(g.Frontend, 1, 3);

        Assert.That(d.Speed, Is.EqualTo(USBIF_SPEED_HIGH));
        Assert.That(d.MaxPacketSize0, Is.EqualTo(64));
        Assert.That(d.BcdUsb, Is.EqualTo(0x0200));
        Assert.That(d.ProductId, Is.EqualTo(MassStorageDevice.SuperSpeedProductId));
        Assert.That(d.Product, Is.EqualTo("Emulated USB 3 Stick"), "strings go to the device");
        Assert.That(d.DescriptorWarnings, Is.Empty);
        Assert.That(d.Endpoints.Select(e => e.MaxPacketSize), Is.EqualTo(new ushort[] { 512, 512 }));

        var storage = new GuestMassStorage(d);
        await storage.ReadCapacityAsync();
        byte[] all = new byte[storage.BlockCount * storage.BlockSize];
        for (int lba = 0; lba < storage.BlockCount; lba += GuestMassStorage.BlocksPerCommand)
        {
            int n = (int)Math.Min(GuestMassStorage.BlocksPerCommand, storage.BlockCount - lba);
            await storage.ReadAsync((uint)lba, all.AsMemory(lba * 512, n * 512));
        }
        Assert.That(SHA256.HashData(all), Is.EqualTo(SHA256.HashData(await File.ReadAllBytesAsync(image))));

        byte[] pattern = RandomNumberGenerator.GetBytes(64 * 1024);
        await storage.WriteAsync(100, pattern);
        byte[] back = new byte[pattern.Length];
        await storage.ReadAsync(100, back);
        Assert.That(back, Is.EqualTo(pattern));
    }

    [Test]
    public async Task PartialReads_SeeOneConsistentDescriptorSet()
    {
        (string stick, _) = PlugSuperSpeedStick();
        GuestHandle g = await _world.AddGuestAsync("g1", 4, 2, stick);
        GuestUsbDevice d = await GuestUsbDevice.EnumerateAsync(g.Frontend, 1, 3);

        byte[] head = new byte[9];
        UrbResult r = await d.ControlAsync(0x80, 6, 0x0200, 0, head);
        Assert.That(r.Ok && r.ActualLength == 9, Is.True);
        int total = BinaryPrimitives.ReadUInt16LittleEndian(head.AsSpan(2));
        Assert.That(total, Is.EqualTo(9 + 9 + 7 + 7), "the header announces the set without companions");
        byte[] big = new byte[255];
        r = await d.ControlAsync(0x80, 6, 0x0200, 0, big);
        Assert.That(r.ActualLength, Is.EqualTo(total), "a longer read gets the announced length, no more");
        byte[] some = new byte[20];
        r = await d.ControlAsync(0x80, 6, 0x0200, 0, some);
        Assert.That(r.ActualLength, Is.EqualTo(20));
        Assert.That(some, Is.EqualTo(big[..20]));

        byte[] dev8 = new byte[8];
        r = await d.ControlAsync(0x80, 6, 0x0100, 0, dev8);
        Assert.That((r.ActualLength, dev8[7], BinaryPrimitives.ReadUInt16LittleEndian(dev8.AsSpan(2))), Is.EqualTo((8, (byte)64, (ushort)0x0200)));

        byte[] qualifier = new byte[10];
        r = await d.ControlAsync(0x80, 6, 0x0600, 0, qualifier);
        Assert.That(r.Ok, Is.True);
        Assert.That((qualifier[0], qualifier[1], qualifier[7]), Is.EqualTo(((byte)10, (byte)6, (byte)64)));

        r = await d.ControlAsync(0x80, 6, 0x0201, 0, big);
        Assert.That(r.Status, Is.EqualTo(USBIF_STATUS_STALL), "a configuration the device does not have");
    }

    [TestCase(0x80, 6, 0x0F00, 5, TestName = "GET_DESCRIPTOR(BOS) stalls")]
    [TestCase(0x80, 6, 0x0700, 9, TestName = "GET_DESCRIPTOR(OTHER_SPEED_CONFIGURATION) stalls")]
    [TestCase(0x00, 48, 0, 6, TestName = "SET_SEL stalls")]
    [TestCase(0x00, 49, 40, 0, TestName = "SET_ISOCH_DELAY stalls")]
    [TestCase(0x00, 3, 48, 0, TestName = "SET_FEATURE(U1_ENABLE) stalls")]
    [TestCase(0x00, 3, 50, 0, TestName = "SET_FEATURE(LTM_ENABLE) stalls")]
    public async Task SuperSpeedOnlyRequests_StallAsOnAHighSpeedDevice(int bmRequestType, int bRequest, int wValue, int length)
    {
        (string stick, _) = PlugSuperSpeedStick();
        GuestHandle g = await _world.AddGuestAsync("g1", 4, 2, stick);
        GuestUsbDevice d = await GuestUsbDevice.EnumerateAsync(g.Frontend, 1, 3);
        UrbResult r = await d.ControlAsync((byte)bmRequestType, (byte)bRequest, (ushort)wValue, 0, new byte[length]);
        Assert.That(r.Status, Is.EqualTo(USBIF_STATUS_STALL));
        // The device still works afterwards.
        var storage = new GuestMassStorage(d);
        await storage.ReadCapacityAsync();
        Assert.That(storage.BlockCount, Is.EqualTo(2 * 1024 * 1024 / 512));
    }

    [Test]
    public async Task HighSpeedStick_IsServedAsItIs()
    {
        string stick = _world.PlugStick();
        GuestHandle g = await _world.AddGuestAsync("g1", 4, 2, stick);
        GuestUsbDevice d = await GuestUsbDevice.EnumerateAsync(g.Frontend, 1, 3);
        byte[] q = new byte[10];
        UrbResult r = await d.ControlAsync(0x80, 6, 0x0600, 0, q);
        Assert.That(r.Ok, Is.True);
        Assert.That(q[7], Is.EqualTo(64), "the device's own qualifier: full-speed ep0 of 64");
        byte[] other = new byte[32];
        r = await d.ControlAsync(0x80, 6, 0x0700, 0, other);
        Assert.That(r.Ok, Is.True, "a high-speed device answers OTHER_SPEED_CONFIGURATION itself");
        Assert.That(d.DescriptorWarnings, Is.Empty);
    }

    [Test]
    public async Task SuperSpeedStick_OnAUsb11Controller_IsRefused()
    {
        (string stick, _) = PlugSuperSpeedStick();
        GuestHandle g = await _world.AddGuestAsync("g1", 4, 1);
        await _world.Toolstack.AttachAsync(g.Id, g.DevId, 1, stick);
        PortStatus? verdict = await _world.Toolstack.WaitForVerdictAsync(g.Id, g.DevId, 1, stick, TimeSpan.FromSeconds(10));
        Assert.That(verdict?.Verdict, Is.EqualTo(PortStatus.Refused));
        Assert.That(verdict?.Reason, Does.Contain("USB 1.x controller"));
        Assert.That(await _world.Dom0.ReadAsync($"/local/domain/0/backend/vusb/{g.Id.Value}/{g.DevId}/port/1"), Is.Empty, "a refused assignment leaves no port node behind");
        Assert.That(g.Frontend.PortSpeed(1), Is.EqualTo(USBIF_SPEED_NONE));
    }
}
