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
/// Bulk IN requests queued together (usb_sg_init through xen-hcd: one request per page) are served by
/// one transfer to the device, and the guest sees exactly what separate transfers would have given it.
/// </summary>
[TestFixture]
public sealed class BulkMergeTests
{
    private SimWorld _world = null!;
    private string _image = null!;
    private GuestHandle _g = null!;
    private GuestUsbDevice _dev = null!;

    [SetUp]
    public async Task StartWorld()
    {
        _world = await SimWorld.StartAsync();
        _image = Path.Combine(_world.Directory, "merge.img");
        StickImage.Create(_image, 1024 * 1024, seed: 17);
        _g = await _world.AddGuestAsync("g1", 2, 2, _world.Plug(new MassStorageDevice(_image, readOnly: true)));
        _dev = await GuestUsbDevice.EnumerateAsync(_g.Frontend, 1, 2);
    }

    [TearDown]
    public async Task StopWorld() => await _world.DisposeAsync();

    private Task<UrbStatistics> StatisticsAsync()
    {
        VusbController c = _world.Registry.Find(_g.Id, _g.DevId)!.Controller!;
        return _world.Loop.InvokeAsync(() => c.Statistics);
    }

    private byte BulkIn => _dev.FindEndpoint(UsbTransferType.Bulk, true)!.Value.Address;

    private byte BulkOut => _dev.FindEndpoint(UsbTransferType.Bulk, false)!.Value.Address;

    /// <summary>A READ(10) command block wrapper for <paramref name="blocks"/> blocks at LBA 0.</summary>
    private async Task SendReadCommandAsync(int blocks)
    {
        byte[] cbw = new byte[31];
        BinaryPrimitives.WriteUInt32LittleEndian(cbw, 0x43425355);
        BinaryPrimitives.WriteUInt32LittleEndian(cbw.AsSpan(4), 77);
        BinaryPrimitives.WriteUInt32LittleEndian(cbw.AsSpan(8), (uint)(blocks * 512));
        cbw[12] = 0x80;
        cbw[14] = 10;
        cbw[15] = 0x28;
        BinaryPrimitives.WriteUInt16BigEndian(cbw.AsSpan(22), (ushort)blocks);
        Assert.That((await _dev.BulkAsync(BulkOut, cbw)).Status, Is.EqualTo(USBIF_STATUS_OK));
    }

    private static List<Memory<byte>> Pages(byte[] buffer)
    {
        var pages = new List<Memory<byte>>();
        for (int off = 0; off < buffer.Length; off += 4096)
        {
            pages.Add(buffer.AsMemory(off, Math.Min(4096, buffer.Length - off)));
        }
        return pages;
    }

    [Test]
    public async Task ScatteredReads_AreMerged_AndReadTheStickExactly()
    {
        var storage = new GuestMassStorage(_dev) { ScatterReads = true };
        await storage.ReadCapacityAsync();
        byte[] all = new byte[storage.BlockCount * storage.BlockSize];
        for (int lba = 0; lba < storage.BlockCount; lba += GuestMassStorage.BlocksPerCommand)
        {
            int n = (int)Math.Min(GuestMassStorage.BlocksPerCommand, storage.BlockCount - lba);
            await storage.ReadAsync((uint)lba, all.AsMemory(lba * 512, n * 512));
        }
        Assert.That(SHA256.HashData(all), Is.EqualTo(SHA256.HashData(await File.ReadAllBytesAsync(_image))));

        UrbStatistics stats = await StatisticsAsync();
        Assert.That(stats.MergedTransfers, Is.GreaterThan(0));
        // 120 blocks = 15 pages a command: each command's data moved in a few transfers, not fifteen.
        Assert.That((double)stats.Merged / stats.MergedTransfers, Is.GreaterThan(4));
        Assert.That(_g.Guest.Grants.MappedGrants, Is.EqualTo(2), "only the ring pages stay mapped");
    }

    [Test]
    public async Task Counters_SayWhatTheDataPathDid()
    {
        var storage = new GuestMassStorage(_dev) { ScatterReads = true };
        await storage.ReadCapacityAsync();
        byte[] data = new byte[GuestMassStorage.BlocksPerCommand * 512];
        await storage.ReadAsync(0, data);

        UrbStatistics s = await StatisticsAsync();
        Assert.That(s.Kicks, Is.GreaterThan(0), "the guest's notifications were counted");
        Assert.That(s.Pushes, Is.InRange(1, s.Requests), "at most one push per request answered");
        Assert.That(s.Notifies, Is.InRange(1, s.Pushes), "a notification only with a push");
        Assert.That(s.Submits, Is.EqualTo(s.Completed - s.Merged + s.MergedTransfers), "a merged transfer is one submit");
        Assert.That(s.GrantSegments, Is.GreaterThanOrEqualTo(s.GrantCalls));
        Assert.That(s.GrantCalls, Is.GreaterThan(0));
        Assert.That(await _world.Registry.LogCountersAsync(), Is.EqualTo(1), "one connected controller logged");
    }

    [Test]
    public async Task ControllerWithMergingOff_GivesEveryRequestItsOwnTransfer()
    {
        _world.MergeBulkIn = false;
        string image = Path.Combine(_world.Directory, "nomerge.img");
        StickImage.Create(image, 256 * 1024, seed: 18);
        GuestHandle g = await _world.AddGuestAsync("g2", 2, 2, _world.Plug(new MassStorageDevice(image, readOnly: true)));
        var storage = new GuestMassStorage(await GuestUsbDevice.EnumerateAsync(g.Frontend, 1, 2)) { ScatterReads = true };
        await storage.ReadCapacityAsync();
        byte[] all = new byte[256 * 1024];
        for (int lba = 0; lba < all.Length / 512; lba += GuestMassStorage.BlocksPerCommand)
        {
            int n = Math.Min(GuestMassStorage.BlocksPerCommand, (all.Length / 512) - lba);
            await storage.ReadAsync((uint)lba, all.AsMemory(lba * 512, n * 512));
        }
        Assert.That(SHA256.HashData(all), Is.EqualTo(SHA256.HashData(await File.ReadAllBytesAsync(image))));
        VusbController c = _world.Registry.Find(g.Id, g.DevId)!.Controller!;
        Assert.That(c.MergeBulkIn, Is.False);
        Assert.That((await _world.Loop.InvokeAsync(() => c.Statistics)).Merged, Is.Zero);
    }

    [Test]
    public async Task WithoutShortNotOk_RequestsAreNotMerged()
    {
        await SendReadCommandAsync(16);
        byte[] data = new byte[16 * 512];
        UrbResult[] results = await _dev.BulkManyAsync(BulkIn, Pages(data), shortNotOk: false);
        Assert.That(results.Select(r => (r.Status, r.ActualLength)), Is.EqualTo(new[] { (0, 4096), (0, 4096) }));
        Assert.That((await StatisticsAsync()).Merged, Is.Zero);
        byte[] expected = new byte[data.Length];
        using (FileStream f = File.OpenRead(_image))
        {
            f.ReadExactly(expected);
        }
        Assert.That(data, Is.EqualTo(expected));
    }

    [Test]
    public async Task ShortMergedRead_FailsTheRequestItStoppedIn_AndAnswersTheRestUnserved()
    {
        // The command asks for 2 blocks; the guest queued three pages: the device's data ends early.
        await SendReadCommandAsync(2);
        byte[] data = new byte[3 * 4096];
        UrbResult[] results = await _dev.BulkManyAsync(BulkIn, Pages(data), shortNotOk: true);

        Assert.That(results[0], Is.EqualTo(new UrbResult(USBIF_STATUS_IOERROR, 1024)), "short with SHORT_NOT_OK: -EREMOTEIO, the data it got");
        Assert.That(results[1], Is.EqualTo(new UrbResult(USBIF_STATUS_SHUTDOWN, 0)));
        Assert.That(results[2], Is.EqualTo(new UrbResult(USBIF_STATUS_SHUTDOWN, 0)));
        Assert.That((await StatisticsAsync()).MergedTransfers, Is.EqualTo(1));
        byte[] expected = new byte[1024];
        using (FileStream f = File.OpenRead(_image))
        {
            f.ReadExactly(expected);
        }
        Assert.That(data.AsSpan(0, 1024).ToArray(), Is.EqualTo(expected));

        // The status wrapper is still there for the next IN, as on a real bus.
        byte[] csw = new byte[13];
        UrbResult c = await _dev.BulkAsync(BulkIn, csw);
        Assert.That((c.Status, c.ActualLength, BinaryPrimitives.ReadUInt32LittleEndian(csw)), Is.EqualTo((USBIF_STATUS_OK, 13, 0x53425355u)));
    }

    [Test]
    public async Task UnlinkingMergedRequests_CancelsTheirTransfer_AndFreesEverything()
    {
        // No command first: the stick holds the IN until it is cancelled.
        using var cts = new CancellationTokenSource();
        Task<UrbResult[]> pending = _dev.BulkManyAsync(BulkIn, Pages(new byte[3 * 4096]), shortNotOk: true, cts.Token);
        VusbController c = _world.Registry.Find(_g.Id, _g.DevId)!.Controller!;
        await _world.DrainLoopAsync();
        Assert.That(await _world.Loop.InvokeAsync(() => c.InFlight), Is.EqualTo(3));
        Assert.That((await StatisticsAsync()).MergedTransfers, Is.EqualTo(1));

        await cts.CancelAsync();
        UrbResult[] results = await pending.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.That(results.Select(r => r.Status), Is.All.Not.EqualTo(USBIF_STATUS_OK));
        Assert.That(await _world.Loop.InvokeAsync(() => c.InFlight), Is.Zero);
        Assert.That(_g.Frontend.ProtocolError, Is.Null);
    }
}
