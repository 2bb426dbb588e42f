using System.Buffers.Binary;
using System.Runtime.InteropServices;
using global::XenPvUsb.Usbif;
using XenPvUsb.Backend;
using XenPvUsb.Simulation.Devices;
using XenPvUsb.Simulation.Guest;
using XenPvUsb.Tests.Support;
using XenPvUsb.Usb;
using static global::XenPvUsb.Usbif.Usbif;

namespace XenPvUsb.Tests.Backend;

/// <summary>
/// Isochronous transfers end to end: the reference frontend maps its URBs as xen-hcd does (descriptor
/// array behind a struct urb, straddling pages when it must), the daemon serves them to the emulated UAC1
/// device on its frame clock. Playback must arrive sample-exact, capture must be continuous, every
/// packet's result must come back in the guest's own descriptor, and malformed descriptors are refused
/// without disturbing anything else.
/// </summary>
[TestFixture(GrantMode.Copy)]
[TestFixture(GrantMode.Map)]
public sealed class IsochronousTests
{
    private const int Speaker = UsbAudioDevice.SpeakerPacketSize;
    private const int Port = 1;
    private const int Address = 4;

    private readonly GrantMode _grantMode;
    private SimWorld _world = null!;
    private UsbAudioDevice _audio = null!;
    private GuestHandle _guest = null!;
    private GuestUsbDevice _device = null!;

    public IsochronousTests(GrantMode grantMode)
    {
        _grantMode = grantMode;
    }

    [SetUp]
    public async Task StartWorld()
    {
        _world = await SimWorld.StartAsync();
        _world.GrantMode = _grantMode;
        _audio = new UsbAudioDevice();
        string busId = _world.Plug(_audio);
        _guest = await _world.AddGuestAsync("audio", 2, 2, busId);
        _device = await GuestUsbDevice.EnumerateAsync(_guest.Frontend, Port, Address);
        Assert.That(_device.VendorId, Is.EqualTo(UsbAudioDevice.DefaultVendorId));
    }

    [TearDown]
    public async Task StopWorld()
    {
        Assert.That(_guest.Frontend.ProtocolError, Is.Null);
        await _world.DisposeAsync();
        _audio.Dispose();
    }

    private static UsbifPipe IsoPipe(byte endpoint) =>
        UsbifPipe.Create(Port, Address, endpoint & 0x0f, (endpoint & 0x80) != 0, UsbTransferType.Isochronous);

    /// <summary>Stereo frame n of the test tone: left carries n, right its complement, so a lost, repeated or swapped packet shows.</summary>
    private static void FillPattern(Span<byte> packet, long firstFrame)
    {
        for (int i = 0; i < packet.Length / 4; i++)
        {
            short n = unchecked((short)(firstFrame + i));
            BinaryPrimitives.WriteInt16LittleEndian(packet[(4 * i)..], n);
            BinaryPrimitives.WriteInt16LittleEndian(packet[((4 * i) + 2)..], (short)~n);
        }
    }

    [Test]
    public async Task Playback_ArrivesSampleExact_WithEveryPacketsResultInTheGuestsDescriptors()
    {
        Assert.That((await _device.SetInterfaceAsync(UsbAudioDevice.SpeakerInterface, 1)).Ok);
        const int urbs = 40;
        const int packets = 8;
        const int inFlight = 3; // snd-usb-audio keeps several URBs queued
        var pending = new Queue<Task<IsoUrbResult>>();
        long frame = 0;
        int[] lengths = Enumerable.Repeat(Speaker, packets).ToArray();
        for (int u = 0; u < urbs; u++)
        {
            byte[] data = new byte[packets * Speaker];
            FillPattern(data, frame);
            frame += data.Length / 4;
            pending.Enqueue(_device.IsochronousAsync(UsbAudioDevice.SpeakerEndpoint, data, lengths, startFrame: (ushort)(u + 100)));
            if (pending.Count == inFlight || u == urbs - 1)
            {
                while (pending.Count > (u == urbs - 1 ? 0 : inFlight - 1))
                {
                    IsoUrbResult r = await pending.Dequeue().WaitAsync(TimeSpan.FromSeconds(10));
                    Assert.That((r.Status, r.ActualLength, r.ErrorCount), Is.EqualTo((0, packets * Speaker, 0)));
                    Assert.That(r.Packets.Select(p => (p.ActualLength, p.Status)), Is.All.EqualTo(((uint)Speaker, 0)));
                    Assert.That(r.Packets.Select(p => p.Length), Is.All.EqualTo((uint)Speaker), "the guest's own fields stay as they were");
                }
            }
        }

        byte[] expected = new byte[urbs * packets * Speaker];
        FillPattern(expected, 0);
        Assert.That(_audio.SpeakerPackets, Is.EqualTo(urbs * packets), "no packet lost or repeated");
        Assert.That(_audio.SpeakerData(), Is.EqualTo(expected), "every sample in order");
        UrbStatistics stats = await StatsAsync();
        Assert.That((stats.IsoPackets, stats.IsoPacketErrors), Is.EqualTo(((long)urbs * packets, 0L)));
    }

    [Test]
    public async Task Response_EchoesStartFrame_AsTheGuestGaveIt()
    {
        Assert.That((await _device.SetInterfaceAsync(UsbAudioDevice.SpeakerInterface, 1)).Ok);
        IsoUrbResult r = await _device.IsochronousAsync(UsbAudioDevice.SpeakerEndpoint, new byte[Speaker], [Speaker], startFrame: 0x1234)
            .WaitAsync(TimeSpan.FromSeconds(5));
        Assert.That((r.Status, r.StartFrame), Is.EqualTo((0, 0x1234)));
    }

    [Test]
    public async Task Capture_IsContinuous_AcrossUrbsInFlight()
    {
        Assert.That((await _device.SetInterfaceAsync(UsbAudioDevice.MicrophoneInterface, 1)).Ok);
        int packet = _audio.MicrophonePacketSize;
        const int urbs = 30;
        const int packets = 8;
        int[] lengths = Enumerable.Repeat(packet, packets).ToArray();
        var buffers = new List<byte[]>();
        var pending = new Queue<(Task<IsoUrbResult> Urb, byte[] Buffer)>();
        var captured = new List<byte>();
        for (int u = 0; u < urbs || pending.Count > 0;)
        {
            while (u < urbs && pending.Count < 4)
            {
                byte[] buffer = new byte[packets * packet];
                buffer.AsSpan().Fill(0xA5);
                pending.Enqueue((_device.IsochronousAsync(UsbAudioDevice.MicrophoneEndpoint, buffer, lengths), buffer));
                u++;
            }
            (Task<IsoUrbResult> urb, byte[] data) = pending.Dequeue();
            IsoUrbResult r = await urb.WaitAsync(TimeSpan.FromSeconds(10));
            Assert.That((r.Status, r.ActualLength, r.ErrorCount), Is.EqualTo((0, packets * packet, 0)));
            Assert.That(r.Packets.Select(p => (p.ActualLength, p.Status)), Is.All.EqualTo(((uint)packet, 0)));
            captured.AddRange(data);
        }

        short[] samples = MemoryMarshal.Cast<byte, short>(captured.ToArray()).ToArray();
        Assert.That(samples.Length, Is.EqualTo(urbs * packets * UsbAudioDevice.SamplesPerFrame * 2));
        for (int n = 0; n < samples.Length / 2; n++)
        {
            if (samples[2 * n] != UsbAudioDevice.MicrophoneSample(n, 0) || samples[(2 * n) + 1] != UsbAudioDevice.MicrophoneSample(n, 1))
            {
                Assert.Fail($"sample frame {n}: ({samples[2 * n]}, {samples[(2 * n) + 1]}), expected ({UsbAudioDevice.MicrophoneSample(n, 0)}, {UsbAudioDevice.MicrophoneSample(n, 1)})");
            }
        }
    }

    [Test]
    public async Task Capture_LandsAtEachPacketsOwnOffset_AndLeavesTheRestOfTheBufferAlone()
    {
        Assert.That((await _device.SetInterfaceAsync(UsbAudioDevice.MicrophoneInterface, 1)).Ok);
        int packet = _audio.MicrophonePacketSize;
        // A driver's own layout: packets with gaps between them, the second straddling a page boundary.
        int[] offsets = [0, 4000, 4400];
        int[] lengths = [packet, packet, packet];
        byte[] buffer = new byte[5000];
        buffer.AsSpan().Fill(0xEE);
        IsoUrbResult r = await _guest.Frontend.SubmitIsochronousAsync(IsoPipe(UsbAudioDevice.MicrophoneEndpoint), buffer, lengths, 1, packetOffsets: offsets)
            .WaitAsync(TimeSpan.FromSeconds(5));

        Assert.That((r.Status, r.ActualLength, r.ErrorCount), Is.EqualTo((0, 3 * packet, 0)));
        Assert.That(r.Packets, Is.EqualTo(offsets.Select(o => new IsoPacketResult((uint)o, (uint)packet, (uint)packet, 0)).ToArray()));
        for (int p = 0; p < 3; p++)
        {
            short[] got = MemoryMarshal.Cast<byte, short>(buffer.AsSpan(offsets[p], packet)).ToArray();
            short[] want = Enumerable.Range(0, packet / 2)
                .Select(i => UsbAudioDevice.MicrophoneSample((p * UsbAudioDevice.SamplesPerFrame) + (i / 2), i % 2)).ToArray();
            Assert.That(got, Is.EqualTo(want), $"packet {p}");
        }
        Assert.That(buffer.AsSpan(packet, 4000 - packet).ToArray(), Is.All.EqualTo(0xEE), "between packets 0 and 1");
        Assert.That(buffer.AsSpan(4000 + packet, 400 - packet).ToArray(), Is.All.EqualTo(0xEE), "between packets 1 and 2");
        Assert.That(buffer.AsSpan(4400 + packet).ToArray(), Is.All.EqualTo(0xEE), "after the last packet");
    }

    [Test]
    public async Task PacketLongerThanTheEndpointsMaxPacket_FailsAsUsbcoreWould_WithoutHarm()
    {
        Assert.That((await _device.SetInterfaceAsync(UsbAudioDevice.MicrophoneInterface, 1)).Ok);
        IsoUrbResult r = await _guest.Frontend.SubmitIsochronousAsync(IsoPipe(UsbAudioDevice.MicrophoneEndpoint), new byte[600], [300, 300], 1)
            .WaitAsync(TimeSpan.FromSeconds(5));
        Assert.That(r.Status, Is.Not.Zero);
        Assert.That(r.ActualLength, Is.Zero);
        await AssertStillServingAsync();
    }

    [Test]
    public async Task ARequestOfMoreThan128Packets_GoesAsSeveralUsbfsUrbs_InOrder()
    {
        Assert.That((await _device.SetInterfaceAsync(UsbAudioDevice.SpeakerInterface, 1)).Ok);
        const int packets = 300; // 128 + 128 + 44
        const int length = 100;
        byte[] data = new byte[packets * length];
        FillPattern(data, 0);
        IsoUrbResult r = await _device.IsochronousAsync(UsbAudioDevice.SpeakerEndpoint, data, Enumerable.Repeat(length, packets).ToArray())
            .WaitAsync(TimeSpan.FromSeconds(10));

        Assert.That((r.Status, r.ActualLength, r.ErrorCount), Is.EqualTo((0, packets * length, 0)));
        Assert.That(r.Packets.Select(p => p.ActualLength), Is.All.EqualTo((uint)length));
        Assert.That(_audio.SpeakerPackets, Is.EqualTo(packets));
        Assert.That(_audio.SpeakerData(), Is.EqualTo(data));
    }

    [Test]
    public async Task Unlink_AnswersTheRequest_AndTheEndpointStreamsOnAfterIt()
    {
        Assert.That((await _device.SetInterfaceAsync(UsbAudioDevice.MicrophoneInterface, 1)).Ok);
        int packet = _audio.MicrophonePacketSize;
        using var cts = new CancellationTokenSource();
        // 250 packets (two usbfs URBs) take a quarter of a second on the frame clock: unlinked well before.
        Task<IsoUrbResult> longUrb = _device.IsochronousAsync(UsbAudioDevice.MicrophoneEndpoint, new byte[250 * packet],
            Enumerable.Repeat(packet, 250).ToArray(), cancellationToken: cts.Token);
        await Task.Delay(20);
        cts.Cancel();
        IsoUrbResult cut = await longUrb.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.That(cut.Status, Is.Not.EqualTo(0), "an unlinked URB does not complete as if whole");
        Assert.That(cut.ActualLength, Is.LessThan(250 * packet));

        IsoUrbResult next = await _device.IsochronousAsync(UsbAudioDevice.MicrophoneEndpoint, new byte[8 * packet], Enumerable.Repeat(packet, 8).ToArray())
            .WaitAsync(TimeSpan.FromSeconds(5));
        Assert.That((next.Status, next.ActualLength), Is.EqualTo((0, 8 * packet)));
        Assert.That(await _world.Loop.InvokeAsync(() => Controller.InFlight), Is.Zero);
    }

    [Test]
    public async Task OtherTraffic_IsServedWhileLongIsochronousUrbsAreQueued()
    {
        Assert.That((await _device.SetInterfaceAsync(UsbAudioDevice.SpeakerInterface, 1)).Ok);
        // Two URBs of 200 ms each on the frame clock; control requests in between are answered at once.
        Task<IsoUrbResult> a = _device.IsochronousAsync(UsbAudioDevice.SpeakerEndpoint, new byte[200 * 100], Enumerable.Repeat(100, 200).ToArray());
        Task<IsoUrbResult> b = _device.IsochronousAsync(UsbAudioDevice.SpeakerEndpoint, new byte[200 * 100], Enumerable.Repeat(100, 200).ToArray());
        for (int i = 0; i < 10; i++)
        {
            byte[] status = new byte[2];
            UrbResult s = await _device.ControlAsync(0x80, 0, 0, 0, status).WaitAsync(TimeSpan.FromSeconds(5));
            Assert.That(s.Ok);
        }
        Assert.That(a.IsCompleted && b.IsCompleted, Is.False, "the control requests did not wait for the isochronous ones");
        Assert.That((await a.WaitAsync(TimeSpan.FromSeconds(5))).Ok && (await b.WaitAsync(TimeSpan.FromSeconds(5))).Ok);
    }

    [Test]
    public async Task Unplug_AnswersEveryIsochronousUrbInFlight()
    {
        Assert.That((await _device.SetInterfaceAsync(UsbAudioDevice.MicrophoneInterface, 1)).Ok);
        int packet = _audio.MicrophonePacketSize;
        var urbs = Enumerable.Range(0, 3).Select(_ => _device.IsochronousAsync(UsbAudioDevice.MicrophoneEndpoint, new byte[250 * packet],
            Enumerable.Repeat(packet, 250).ToArray())).ToArray();
        await Task.Delay(20);
        _world.Host.Usb.Unplug(_audio.BusId);
        foreach (Task<IsoUrbResult> urb in urbs)
        {
            IsoUrbResult r = await urb.WaitAsync(TimeSpan.FromSeconds(5));
            Assert.That(r.Status, Is.Not.Zero);
        }
        await _guest.Frontend.WaitForPortAsync(Port, connected: false, TimeSpan.FromSeconds(5));
        Assert.That(await _world.Loop.InvokeAsync(() => Controller.InFlight), Is.Zero);
        Assert.That(await _world.Loop.InvokeAsync(() => Controller.DeviceBytesInFlight), Is.Zero, "the usbfs budget got its memory back");
    }

    [Test]
    public async Task Detach_AnswersEveryIsochronousUrbInFlight_AndTheGuestCanStreamAfterReattach()
    {
        Assert.That((await _device.SetInterfaceAsync(UsbAudioDevice.SpeakerInterface, 1)).Ok);
        var urbs = Enumerable.Range(0, 3).Select(_ => _device.IsochronousAsync(UsbAudioDevice.SpeakerEndpoint, new byte[200 * 100],
            Enumerable.Repeat(100, 200).ToArray())).ToArray();
        await Task.Delay(20);
        await _world.Toolstack.DetachAsync(_guest.Id, _guest.DevId, Port);
        foreach (Task<IsoUrbResult> urb in urbs)
        {
            await urb.WaitAsync(TimeSpan.FromSeconds(5));
        }
        await _guest.Frontend.WaitForPortAsync(Port, connected: false, TimeSpan.FromSeconds(5));

        await _world.Toolstack.AttachAsync(_guest.Id, _guest.DevId, Port, _audio.BusId);
        await _guest.Frontend.WaitForPortAsync(Port, connected: true, TimeSpan.FromSeconds(5));
        _device = await GuestUsbDevice.EnumerateAsync(_guest.Frontend, Port, Address);
        _audio.ClearSpeakerData();
        await AssertStillServingAsync();
        Assert.That(_audio.SpeakerData(), Has.Length.EqualTo(2 * Speaker));
    }

    private VusbController Controller => _world.Registry.Find(_guest.Id, _guest.DevId)!.Controller!;

    private Task<UrbStatistics> StatsAsync() => _world.Loop.InvokeAsync(() => Controller.Statistics);

    // --- hostile descriptors: raw requests, each refused with -EINVAL, the controller serving on -------------

    /// <summary>A raw isochronous OUT request of one data page and its descriptors in their own page (at <paramref name="descriptorOffset"/>).</summary>
    private unsafe usbif_urb_request RawIso(ReadOnlySpan<(uint Offset, uint Length)> packets, int dataLength = 4096, ushort descriptorOffset = 0,
        bool readOnlyDescriptors = false, int declaredPackets = -1, ushort descriptorSegmentLength = 0)
    {
        (nint dataPage, global::XenPvUsb.Xen.GrantRef dataRef) = _guest.Frontend.GrantPage(readOnly: true);
        (nint descPage, global::XenPvUsb.Xen.GrantRef descRef) = _guest.Frontend.GrantPage(readOnlyDescriptors);
        new Span<byte>((void*)dataPage, 4096).Fill(0x33);
        var desc = new Span<byte>((byte*)descPage + descriptorOffset, 4096 - descriptorOffset);
        for (int i = 0; i < packets.Length; i++)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(desc[(16 * i)..], packets[i].Offset);
            BinaryPrimitives.WriteUInt32LittleEndian(desc[((16 * i) + 4)..], packets[i].Length);
        }
        var req = new usbif_urb_request
        {
            id = 300,
            pipe = IsoPipe(UsbAudioDevice.SpeakerEndpoint).Value,
            nr_buffer_segs = 1,
            buffer_length = (ushort)dataLength,
            u_isoc_interval = 1,
            u_isoc_number_of_packets = (ushort)(declaredPackets >= 0 ? declaredPackets : packets.Length),
            u_isoc_nr_frame_desc_segs = 1,
        };
        req.seg[0] = new usbif_request_segment { gref = dataRef.Value, offset = 0, length = (ushort)dataLength };
        ushort descLength = descriptorSegmentLength != 0 ? descriptorSegmentLength : (ushort)Math.Min(4096 - descriptorOffset, 16 * packets.Length);
        req.seg[1] = new usbif_request_segment { gref = descRef.Value, offset = descriptorOffset, length = descLength };
        return req;
    }

    private async Task<usbif_urb_response> SubmitRawAsync(usbif_urb_request req) =>
        await _guest.Frontend.SubmitRawAsync(req).WaitAsync(TimeSpan.FromSeconds(5));

    private async Task AssertStillServingAsync()
    {
        Assert.That((await _device.SetInterfaceAsync(UsbAudioDevice.SpeakerInterface, 1)).Ok);
        IsoUrbResult r = await _device.IsochronousAsync(UsbAudioDevice.SpeakerEndpoint, new byte[2 * Speaker], [Speaker, Speaker])
            .WaitAsync(TimeSpan.FromSeconds(5));
        Assert.That((r.Status, r.ActualLength), Is.EqualTo((0, 2 * Speaker)));
        Assert.That(await _world.Loop.InvokeAsync(() => Controller.IsConnected), Is.True);
    }

    [Test]
    public async Task WellFormedRawRequest_IsServed()
    {
        Assert.That((await _device.SetInterfaceAsync(UsbAudioDevice.SpeakerInterface, 1)).Ok);
        usbif_urb_response r = await SubmitRawAsync(RawIso([(0, 192), (192, 192)]));
        Assert.That((r.status, r.actual_length, r.error_count), Is.EqualTo((0, 384, 0)));
        Assert.That(_audio.SpeakerData(), Is.All.EqualTo(0x33));
    }

    [TestCase(4000u, 192u, TestName = "PacketEndsPastTheBuffer")]
    [TestCase(4097u, 0u, TestName = "EmptyPacketStartsPastTheBuffer")]
    [TestCase(0xFFFFFFF0u, 0x20u, TestName = "OffsetPlusLengthWrapsAround")]
    [TestCase(0u, 0xFFFFFFFFu, TestName = "LengthNearFourGiB")]
    [TestCase(0u, 98305u, TestName = "LengthAboveWhatUsbfsMoves")]
    public async Task PacketOutsideTheBuffer_IsRefused(uint offset, uint length)
    {
        usbif_urb_response r = await SubmitRawAsync(RawIso([(0, 192), (offset, length)]));
        Assert.That((r.status, r.actual_length), Is.EqualTo((USBIF_STATUS_INVAL, 0)));
        Assert.That(_audio.SpeakerPackets, Is.Zero, "nothing reached the device");
        await AssertStillServingAsync();
    }

    [Test]
    public async Task OverlappingPacketsLongerTogetherThanTheBuffer_AreRefused()
    {
        // Each inside the 4 KiB buffer, but 40 of them would make a 160 KiB device-side buffer.
        (uint, uint)[] packets = Enumerable.Repeat((0u, 4096u), 40).ToArray();
        usbif_urb_response r = await SubmitRawAsync(RawIso(packets));
        Assert.That(r.status, Is.EqualTo(USBIF_STATUS_INVAL));
        await AssertStillServingAsync();
    }

    [Test]
    public async Task MorePacketsThanTheDescriptorSegmentsHold_AreRefused()
    {
        usbif_urb_response r = await SubmitRawAsync(RawIso([(0, 192)], declaredPackets: 100));
        Assert.That(r.status, Is.EqualTo(USBIF_STATUS_INVAL));
        await AssertStillServingAsync();
    }

    [Test]
    public async Task MorePacketsThanTheBackendServes_AreRefused()
    {
        // 1025 descriptors fill 16400 bytes: more than one page can carry, so the descriptor segment claims less.
        usbif_urb_response r = await SubmitRawAsync(RawIso([(0, 0)], declaredPackets: UrbRequestValidator.MaxIsoPacketsPerRequest + 1,
            descriptorSegmentLength: 4096));
        Assert.That(r.status, Is.EqualTo(USBIF_STATUS_INVAL));
        await AssertStillServingAsync();
    }

    [Test]
    public async Task ReadOnlyDescriptorPage_FailsTheRequest_WhenTheResultsCannotBeWrittenBack()
    {
        Assert.That((await _device.SetInterfaceAsync(UsbAudioDevice.SpeakerInterface, 1)).Ok);
        usbif_urb_response r = await SubmitRawAsync(RawIso([(0, 192)], readOnlyDescriptors: true));
        Assert.That((r.status, r.actual_length), Is.EqualTo((USBIF_STATUS_INVAL, 0)));
        await AssertStillServingAsync();
    }

    [Test]
    public async Task UngrantedDescriptorPage_IsRefused()
    {
        usbif_urb_request req = RawIso([(0, 192)]);
        req.seg[1].gref = 0x7ffffff0;
        usbif_urb_response r = await SubmitRawAsync(req);
        Assert.That(r.status, Is.EqualTo(USBIF_STATUS_INVAL));
        Assert.That(_audio.SpeakerPackets, Is.Zero);
        await AssertStillServingAsync();
    }

    [Test]
    public async Task IsochronousRequestToANonIsochronousEndpoint_FailsAtTheDevice()
    {
        usbif_urb_request req = RawIso([(0, 8)]);
        req.pipe = UsbifPipe.Create(Port, Address, 3, false, UsbTransferType.Isochronous).Value; // no such endpoint
        usbif_urb_response r = await SubmitRawAsync(req);
        Assert.That(r.status, Is.Not.EqualTo(0));
        await AssertStillServingAsync();
    }
}
