using System.Buffers.Binary;
using System.Security.Cryptography;
using XenPvUsb.Backend;
using XenPvUsb.Simulation.Devices;
using XenPvUsb.Simulation.Guest;
using XenPvUsb.Tests.Support;
using XenPvUsb.Usb;
using XenPvUsb.Usbif;
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
    public async Task ScatteredWrites_AreMerged_AndWriteTheStickExactly()
    {
        string image = Path.Combine(_world.Directory, "write.img");
        StickImage.Create(image, 512 * 1024, seed: 19);
        GuestHandle g = await _world.AddGuestAsync("gw", 2, 2, _world.Plug(new MassStorageDevice(image)));
        var storage = new GuestMassStorage(await GuestUsbDevice.EnumerateAsync(g.Frontend, 1, 2)) { ScatterReads = true, ScatterWrites = true };
        await storage.ReadCapacityAsync();
        byte[] written = new byte[256 * 1024];
        new Random(5).NextBytes(written);
        for (int lba = 0; lba < written.Length / 512; lba += GuestMassStorage.BlocksPerCommand)
        {
            int n = Math.Min(GuestMassStorage.BlocksPerCommand, (written.Length / 512) - lba);
            await storage.WriteAsync((uint)(lba + 64), written.AsMemory(lba * 512, n * 512)).WaitAsync(TimeSpan.FromSeconds(10));
        }
        VusbController c = _world.Registry.Find(g.Id, g.DevId)!.Controller!;
        UrbStatistics afterWrites = await _world.Loop.InvokeAsync(() => c.Statistics);
        Assert.That(afterWrites.MergedTransfers, Is.GreaterThan(0), "the writes' pages were merged");
        Assert.That((double)afterWrites.Merged / afterWrites.MergedTransfers, Is.GreaterThan(4));

        byte[] back = new byte[written.Length];
        for (int lba = 0; lba < back.Length / 512; lba += GuestMassStorage.BlocksPerCommand)
        {
            int n = Math.Min(GuestMassStorage.BlocksPerCommand, (back.Length / 512) - lba);
            await storage.ReadAsync((uint)(lba + 64), back.AsMemory(lba * 512, n * 512)).WaitAsync(TimeSpan.FromSeconds(10));
        }
        Assert.That(back, Is.EqualTo(written));
        byte[] onDisk = new byte[written.Length];
        using (FileStream f = File.OpenRead(image))
        {
            f.Position = 64 * 512;
            f.ReadExactly(onDisk);
        }
        Assert.That(onDisk, Is.EqualTo(written), "the device got every byte, in order");

        UrbStatistics s = await _world.Loop.InvokeAsync(() => c.Statistics);
        // One grant-copy call per transfer at most: a merged transfer's pages go in one call, not one each.
        Assert.That(s.GrantCalls, Is.LessThanOrEqualTo(s.Submits));
        Assert.That(s.GrantCalls, Is.LessThan(s.Completed - (s.Merged / 2)), "fewer calls than requests with data");
    }

    [Test]
    public async Task MergedRead_WithOnePageNotGranted_FailsOnlyThatRequest()
    {
        await SendReadCommandAsync(24);
        var pages = new (nint Page, global::XenPvUsb.Xen.GrantRef Ref)[3];
        var requests = new usbif_urb_request[3];
        for (int i = 0; i < 3; i++)
        {
            pages[i] = _g.Frontend.GrantPage(readOnly: false);
            var req = new usbif_urb_request
            {
                id = (ushort)(700 + i),
                pipe = UsbifPipe.Create(1, _dev.Address, BulkIn & 0x0f, true, UsbTransferType.Bulk).Value,
                transfer_flags = USBIF_SHORT_NOT_OK,
                buffer_length = 4096,
                nr_buffer_segs = 1,
            };
            req.seg[0] = new usbif_request_segment { gref = i == 1 ? 999_999u : pages[i].Ref.Value, offset = 0, length = 4096 };
            requests[i] = req;
        }
        usbif_urb_response[] r = await _g.Frontend.SubmitRawBatchAsync(requests).WaitAsync(TimeSpan.FromSeconds(5));

        Assert.That(r.Select(x => (x.id, x.status, x.actual_length)),
            Is.EqualTo(new[] { ((ushort)700, USBIF_STATUS_OK, 4096), ((ushort)701, USBIF_STATUS_INVAL, 0), ((ushort)702, USBIF_STATUS_OK, 4096) }));
        Assert.That((await StatisticsAsync()).MergedTransfers, Is.EqualTo(1), "the three were one transfer");
        byte[] expected = new byte[3 * 4096];
        using (FileStream f = File.OpenRead(_image))
        {
            f.ReadExactly(expected);
        }
        unsafe
        {
            Assert.That(new ReadOnlySpan<byte>((void*)pages[0].Page, 4096).ToArray(), Is.EqualTo(expected.AsSpan(0, 4096).ToArray()));
            Assert.That(new ReadOnlySpan<byte>((void*)pages[2].Page, 4096).ToArray(), Is.EqualTo(expected.AsSpan(8192, 4096).ToArray()));
        }
        Assert.That(_g.Frontend.ProtocolError, Is.Null);
    }

    [Test]
    public async Task MergedWrite_WithOnePageNotGranted_SendsTheOthersInOrder_AndRefusesIt()
    {
        string image = Path.Combine(_world.Directory, "badwrite.img");
        StickImage.Create(image, 256 * 1024, seed: 20);
        GuestHandle g = await _world.AddGuestAsync("gb", 2, 2, _world.Plug(new MassStorageDevice(image)));
        GuestUsbDevice dev = await GuestUsbDevice.EnumerateAsync(g.Frontend, 1, 2);
        byte bulkOut = dev.FindEndpoint(UsbTransferType.Bulk, false)!.Value.Address;
        byte bulkIn = dev.FindEndpoint(UsbTransferType.Bulk, true)!.Value.Address;
        // WRITE(10) of 16 blocks at LBA 0: two pages of data are expected.
        byte[] cbw = new byte[31];
        BinaryPrimitives.WriteUInt32LittleEndian(cbw, 0x43425355);
        BinaryPrimitives.WriteUInt32LittleEndian(cbw.AsSpan(4), 78);
        BinaryPrimitives.WriteUInt32LittleEndian(cbw.AsSpan(8), 16 * 512);
        cbw[14] = 10;
        cbw[15] = 0x2a;
        BinaryPrimitives.WriteUInt16BigEndian(cbw.AsSpan(22), 16);
        Assert.That((await dev.BulkAsync(bulkOut, cbw)).Status, Is.EqualTo(USBIF_STATUS_OK));

        var requests = new usbif_urb_request[3];
        byte[][] content = [new byte[4096], new byte[4096], new byte[4096]];
        for (int i = 0; i < 3; i++)
        {
            new Random(30 + i).NextBytes(content[i]);
            (nint page, global::XenPvUsb.Xen.GrantRef gref) = g.Frontend.GrantPage(readOnly: true);
            unsafe
            {
                content[i].CopyTo(new Span<byte>((void*)page, 4096));
            }
            var req = new usbif_urb_request
            {
                id = (ushort)(800 + i),
                pipe = UsbifPipe.Create(1, dev.Address, bulkOut & 0x0f, false, UsbTransferType.Bulk).Value,
                buffer_length = 4096,
                nr_buffer_segs = 1,
            };
            req.seg[0] = new usbif_request_segment { gref = i == 1 ? 999_999u : gref.Value, offset = 0, length = 4096 };
            requests[i] = req;
        }
        usbif_urb_response[] r = await g.Frontend.SubmitRawBatchAsync(requests).WaitAsync(TimeSpan.FromSeconds(5));
        Assert.That(r.Select(x => (x.id, x.status, x.actual_length)),
            Is.EqualTo(new[] { ((ushort)800, USBIF_STATUS_OK, 4096), ((ushort)801, USBIF_STATUS_INVAL, 0), ((ushort)802, USBIF_STATUS_OK, 4096) }));

        byte[] csw = new byte[13];
        UrbResult c = await dev.BulkAsync(bulkIn, csw);
        Assert.That((c.Status, csw[12]), Is.EqualTo((USBIF_STATUS_OK, (byte)0)), "the device got its 16 blocks");
        byte[] onDisk = new byte[8192];
        using (FileStream f = File.OpenRead(image))
        {
            f.ReadExactly(onDisk);
        }
        Assert.That(onDisk, Is.EqualTo(content[0].Concat(content[2]).ToArray()), "the pages that could be copied, in ring order");
        Assert.That(g.Frontend.ProtocolError, Is.Null);
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
