using System.Buffers.Binary;
using XenPvUsb.Simulation.Guest;
using XenPvUsb.Tests.Support;
using XenPvUsb.Usb;
using XenPvUsb.Usbif;
using XenPvUsb.Xen;
using static XenPvUsb.Usbif.Usbif;

namespace XenPvUsb.Tests.Guest;

/// <summary>
/// The reference frontend's isochronous URBs on the wire, against a backend done by hand at the ring
/// (the real backend does not serve them yet): segments, union, grants and the results read back.
/// </summary>
[TestFixture]
public sealed class FrontendIsochronousTests
{
    private string _dir = null!;
    private ManualBackend _backend = null!;

    [SetUp]
    public async Task SetUp()
    {
        _dir = Path.Combine(Path.GetTempPath(), $"xenpvusb-iso-{Guid.NewGuid():N}");
        _backend = await ManualBackend.StartAsync(_dir);
    }

    [TearDown]
    public async Task TearDown()
    {
        await _backend.DisposeAsync();
        if (Directory.Exists(_dir))
        {
            Directory.Delete(_dir, recursive: true);
        }
    }

    [Test]
    public async Task IsoOut_PutsDataSegmentsThenWritableDescriptorSegments()
    {
        byte[] data = [.. Enumerable.Range(0, 3 * 192).Select(i => (byte)(i * 7))];
        var pipe = UsbifPipe.Create(1, 5, 1, isIn: false, UsbTransferType.Isochronous);
        // The descriptor array starts 24 bytes before a page boundary: descriptor 1 straddles it.
        Task<IsoUrbResult> urb = _backend.Frontend.SubmitIsochronousAsync(pipe, data, [192, 192, 192], interval: 1, startFrame: 0x1234,
            pageOffset: 100, descriptorOffset: 4096 - 24);

        usbif_urb_request req = await _backend.NextRequestAsync();

        Assert.Multiple(() =>
        {
            Assert.That(req.pipe, Is.EqualTo(pipe.Value));
            Assert.That(req.buffer_length, Is.EqualTo(576));
            Assert.That(req.nr_buffer_segs, Is.EqualTo(1));
            Assert.That(req.u_isoc_interval, Is.EqualTo(1));
            Assert.That(req.u_isoc_start_frame, Is.EqualTo(0x1234));
            Assert.That(req.u_isoc_number_of_packets, Is.EqualTo(3));
            Assert.That(req.u_isoc_nr_frame_desc_segs, Is.EqualTo(2));
            Assert.That((req.seg[0].offset, req.seg[0].length), Is.EqualTo(((ushort)100, (ushort)576)));
            Assert.That((req.seg[1].offset, req.seg[1].length), Is.EqualTo(((ushort)4072, (ushort)24)));
            Assert.That((req.seg[2].offset, req.seg[2].length), Is.EqualTo(((ushort)0, (ushort)24)));
        });
        Assert.That(_backend.Read(req, 0, 1), Is.EqualTo(data));
        Assert.That(() => _backend.Map(req.seg[0], writable: true).Dispose(), Throws.InstanceOf<GrantException>(), "OUT data is granted read-only");
        byte[] descriptors = _backend.Read(req, 1, 2);
        Assert.That(descriptors, Has.Length.EqualTo(48));
        for (int i = 0; i < 3; i++)
        {
            Assert.That(Descriptor(descriptors, i), Is.EqualTo((192u * (uint)i, 192u, 0u, -18)), $"descriptor {i} as usbcore hands it over");
        }

        // What a backend would write back: actual_length and status, nothing else.
        for (int i = 0; i < 3; i++)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(descriptors.AsSpan((16 * i) + 8), i == 2 ? 0u : 192u);
            BinaryPrimitives.WriteInt32LittleEndian(descriptors.AsSpan((16 * i) + 12), i == 2 ? -71 : 0);
        }
        _backend.Write(req, 1, descriptors);
        _backend.Respond(new usbif_urb_response { id = req.id, status = 0, actual_length = 384, start_frame = 77, error_count = 1 });

        IsoUrbResult r = await urb;
        Assert.That((r.Status, r.ActualLength, r.StartFrame, r.ErrorCount), Is.EqualTo((0, 384, 77, 1)));
        Assert.That(r.Packets, Is.EqualTo(new[]
        {
            new IsoPacketResult(0, 192, 192, 0),
            new IsoPacketResult(192, 192, 192, 0),
            new IsoPacketResult(384, 192, 0, -71),
        }));
        Assert.That(_backend.Frontend.ProtocolError, Is.Null);
        Assert.That(_backend.Guest.Grants.ActiveGrants, Is.EqualTo(2), "only the two ring pages stay granted");
    }

    [Test]
    public async Task IsoIn_GrantsTheBufferWritable_AndSeesWhatTheBackendWroteAtEachPacketsOffset()
    {
        byte[] buffer = new byte[5000];
        buffer.AsSpan().Fill(0xEE);
        var pipe = UsbifPipe.Create(1, 5, 2, isIn: true, UsbTransferType.Isochronous);
        // A driver's own layout: packets with a gap between them (offsets need not be back to back).
        Task<IsoUrbResult> urb = _backend.Frontend.SubmitIsochronousAsync(pipe, buffer, [192, 192], interval: 8, packetOffsets: [0, 4096]);

        usbif_urb_request req = await _backend.NextRequestAsync();
        Assert.That((req.nr_buffer_segs, req.u_isoc_nr_frame_desc_segs, req.u_isoc_interval), Is.EqualTo(((ushort)2, (ushort)1, (ushort)8)));
        Assert.That((req.seg[2].offset, req.seg[2].length), Is.EqualTo(((ushort)SimulatedFrontend.DefaultIsoDescriptorOffset, (ushort)32)));
        byte[] descriptors = _backend.Read(req, 2, 1);
        Assert.That(Descriptor(descriptors, 1), Is.EqualTo((4096u, 192u, 0u, -18)));

        byte[] image = _backend.Read(req, 0, 2);
        image.AsSpan(0, 100).Fill(0x11);
        image.AsSpan(4096, 192).Fill(0x22);
        _backend.Write(req, 0, image);
        BinaryPrimitives.WriteUInt32LittleEndian(descriptors.AsSpan(8), 100);
        BinaryPrimitives.WriteInt32LittleEndian(descriptors.AsSpan(12), 0);
        BinaryPrimitives.WriteUInt32LittleEndian(descriptors.AsSpan(24), 192);
        BinaryPrimitives.WriteInt32LittleEndian(descriptors.AsSpan(28), 0);
        _backend.Write(req, 2, descriptors);
        _backend.Respond(new usbif_urb_response { id = req.id, actual_length = 292 });

        IsoUrbResult r = await urb;
        Assert.That((r.Status, r.ActualLength, r.ErrorCount), Is.EqualTo((0, 292, 0)));
        Assert.That(r.Packets.Select(p => p.ActualLength), Is.EqualTo(new[] { 100u, 192u }));
        Assert.That(buffer.AsSpan(0, 100).ToArray(), Is.All.EqualTo(0x11));
        Assert.That(buffer.AsSpan(100, 3996).ToArray(), Is.All.EqualTo(0xEE), "what the backend left alone keeps the guest's bytes");
        Assert.That(buffer.AsSpan(4096, 192).ToArray(), Is.All.EqualTo(0x22));
    }

    [Test]
    public async Task EmptyBuffer_SendsNoDescriptorSegments_AsXenHcdDoes()
    {
        var pipe = UsbifPipe.Create(1, 5, 1, isIn: false, UsbTransferType.Isochronous);
        Task<IsoUrbResult> urb = _backend.Frontend.SubmitIsochronousAsync(pipe, Memory<byte>.Empty, [0, 0], interval: 1);

        usbif_urb_request req = await _backend.NextRequestAsync();
        Assert.That((req.nr_buffer_segs, req.u_isoc_nr_frame_desc_segs, req.u_isoc_number_of_packets), Is.EqualTo(((ushort)0, (ushort)0, (ushort)2)));
        _backend.Respond(new usbif_urb_response { id = req.id, status = USBIF_STATUS_INVAL });

        IsoUrbResult r = await urb;
        Assert.That(r.Status, Is.EqualTo(USBIF_STATUS_INVAL));
        Assert.That(r.Packets, Is.All.EqualTo(new IsoPacketResult(0, 0, 0, -18)), "nothing could report on them");
    }

    [Test]
    public async Task MoreThan16Pages_IsRefusedBeforeTheRing_AndTheSlotComesBack()
    {
        var pipe = UsbifPipe.Create(1, 5, 1, isIn: false, UsbTransferType.Isochronous);
        // 15 data pages, and 128 descriptors (2048 bytes) from offset 3000 need two more.
        byte[] big = new byte[15 * 4096];
        int[] lengths = [.. Enumerable.Repeat(big.Length / 128, 128)];

        Assert.That(async () => await _backend.Frontend.SubmitIsochronousAsync(pipe, big, lengths, 1, descriptorOffset: 3000),
            Throws.ArgumentException.With.Message.Contains("E2BIG"));

        for (int i = 0; i < SimulatedFrontend.ShadowSlots + 1; i++)
        {
            Assert.That(async () => await _backend.Frontend.SubmitIsochronousAsync(pipe, big, lengths, 1, descriptorOffset: 3000),
                Throws.ArgumentException, "every refused URB gives its slot back");
        }
        Task<IsoUrbResult> fits = _backend.Frontend.SubmitIsochronousAsync(pipe, big, lengths, 1, descriptorOffset: 0);
        usbif_urb_request req = await _backend.NextRequestAsync();
        Assert.That((req.nr_buffer_segs, req.u_isoc_nr_frame_desc_segs), Is.EqualTo(((ushort)15, (ushort)1)));
        _backend.Respond(new usbif_urb_response { id = req.id });
        Assert.That((await fits).Ok, Is.True);
    }

    [Test]
    public async Task Cancel_SendsAnUnlinkForTheIsoRequest()
    {
        var pipe = UsbifPipe.Create(1, 5, 2, isIn: true, UsbTransferType.Isochronous);
        using var cts = new CancellationTokenSource();
        Task<IsoUrbResult> urb = _backend.Frontend.SubmitIsochronousAsync(pipe, new byte[192], [192], 1, cancellationToken: cts.Token);
        usbif_urb_request req = await _backend.NextRequestAsync();

        await cts.CancelAsync();
        usbif_urb_request unlink = await _backend.NextRequestAsync();

        Assert.That(unlink.pipe, Is.EqualTo(pipe.Value | USBIF_PIPE_UNLINK));
        Assert.That(unlink.u_unlink_unlink_id, Is.EqualTo(req.id));
        _backend.Respond(new usbif_urb_response { id = unlink.id });
        _backend.Respond(new usbif_urb_response { id = req.id, status = USBIF_STATUS_SHUTDOWN });
        IsoUrbResult r = await urb;
        Assert.That(r.Status, Is.EqualTo(USBIF_STATUS_SHUTDOWN));
        Assert.That(r.Packets[0].Status, Is.EqualTo(-18));
        Assert.That(_backend.Frontend.ProtocolError, Is.Null);
    }

    [Test]
    public async Task AGrantStillMapped_IsTheProtocolErrorXenHcdLatches()
    {
        var pipe = UsbifPipe.Create(1, 5, 1, isIn: false, UsbTransferType.Isochronous);
        Task<IsoUrbResult> urb = _backend.Frontend.SubmitIsochronousAsync(pipe, new byte[192], [192], 1);
        usbif_urb_request req = await _backend.NextRequestAsync();

        using (GrantMapping descriptors = _backend.Map(req.seg[1], writable: true))
        {
            _backend.Respond(new usbif_urb_response { id = req.id });
            await WaitForAsync(() => _backend.Frontend.ProtocolError is not null);
        }

        Assert.That(_backend.Frontend.ProtocolError, Is.EqualTo("backend didn't release grant"));
        Assert.That(urb.IsCompleted, Is.False, "xen-hcd gives nothing back once latched");
    }

    private static (uint Offset, uint Length, uint ActualLength, int Status) Descriptor(byte[] descriptors, int index)
    {
        ReadOnlySpan<byte> d = descriptors.AsSpan(index * 16, 16);
        return (BinaryPrimitives.ReadUInt32LittleEndian(d), BinaryPrimitives.ReadUInt32LittleEndian(d[4..]),
            BinaryPrimitives.ReadUInt32LittleEndian(d[8..]), BinaryPrimitives.ReadInt32LittleEndian(d[12..]));
    }

    private static async Task WaitForAsync(Func<bool> condition)
    {
        long deadline = Environment.TickCount64 + 10000;
        while (!condition() && Environment.TickCount64 < deadline)
        {
            await Task.Delay(2);
        }
    }
}
