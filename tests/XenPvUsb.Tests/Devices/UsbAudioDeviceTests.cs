using System.Buffers.Binary;
using XenPvUsb.Simulation.Devices;
using XenPvUsb.Usb;

namespace XenPvUsb.Tests.Devices;

[TestFixture]
public sealed class UsbAudioDeviceTests
{
    private const int Speaker = UsbAudioDevice.SpeakerPacketSize;

    private ManualTimeProvider _clock = null!;
    private UsbAudioDevice _audio = null!;
    private TransferRecorder _recorder = null!;

    [SetUp]
    public void SetUp()
    {
        _clock = new ManualTimeProvider();
        _audio = new UsbAudioDevice(timeProvider: _clock);
        Assert.That(_audio.SetConfiguration(1), Is.Zero);
        _recorder = new TransferRecorder();
    }

    [TearDown]
    public void TearDown() => _audio.Dispose();

    [Test]
    public void Configuration_IsTheExpectedUac1Set()
    {
        byte[] config = UsbTestIo.GetDescriptor(_audio, 2, 0, 1024);

        string[] expected =
        [
            "0902B8000301008032",           // configuration: 184 bytes, 3 interfaces, value 1, bus powered, 100 mA
            "090400000001010000",           // interface 0: audio (1), AudioControl (1), no endpoints
            "0A240100013E00020102",         // AC header: bcdADC 1.00, wTotalLength 62, interfaces 1 and 2
            "0C2402010101000203000000",     // input terminal 1: USB streaming, 2 channels (L, R)
            "0A240602010101020200",         // feature unit 2 <- 1: master mute, volume on L and R
            "092403030103000200",           // output terminal 3 <- 2: speaker
            "0C2402040102000203000000",     // input terminal 4: microphone, 2 channels (L, R)
            "092403050101000400",           // output terminal 5 <- 4: USB streaming
            "090401000001020000",           // interface 1 alt 0: AudioStreaming (2), zero bandwidth
            "090401010101020000",           // interface 1 alt 1: one endpoint
            "07240101010100",               // AS general: terminal 1, delay 1, PCM
            "0B2402010202100180BB00",       // format type I: 2 channels, 2-byte subframes, 16 bits, 48000 Hz
            "09050109C000010000",           // endpoint 0x01 OUT, isochronous adaptive, 192 bytes, every frame
            "07250101000000",               // AS iso endpoint: sampling frequency control
            "090402000001020000",           // interface 2 alt 0
            "090402010101020000",           // interface 2 alt 1
            "07240105010100",               // AS general: terminal 5, delay 1, PCM
            "0B2402010202100180BB00",       // format type I: 2 channels, 16 bits, 48000 Hz
            "0905820DC000010000",           // endpoint 0x82 IN, isochronous synchronous, 192 bytes, every frame
            "07250101000000",               // AS iso endpoint: sampling frequency control
        ];

        Assert.That(Convert.ToHexString(config), Is.EqualTo(string.Concat(expected)));
    }

    [Test]
    public void Descriptors_WalkAsUac1()
    {
        byte[] device = UsbTestIo.GetDescriptor(_audio, 1, 0, 18);
        byte[] config = UsbTestIo.GetDescriptor(_audio, 2, 0, 1024);
        Assert.That(device[4], Is.Zero, "class per interface");
        Assert.That(BinaryPrimitives.ReadUInt16LittleEndian(device.AsSpan(8)), Is.EqualTo(UsbAudioDevice.DefaultVendorId));
        Assert.That(BinaryPrimitives.ReadUInt16LittleEndian(device.AsSpan(10)), Is.EqualTo(UsbAudioDevice.DefaultProductId));
        Assert.That(BinaryPrimitives.ReadUInt16LittleEndian(config.AsSpan(2)), Is.EqualTo(config.Length));
        Assert.That(config[4], Is.EqualTo(3), "bNumInterfaces");

        Uac1Topology topology = Uac1Topology.Parse(config);

        Assert.Multiple(() =>
        {
            Assert.That(topology.ControlInterface, Is.Zero);
            Assert.That(topology.Collection, Is.EqualTo(new[] { 1, 2 }), "baInterfaceNr");
            Assert.That(topology.HeaderTotalLength, Is.EqualTo(topology.ClassSpecificControlLength), "header wTotalLength");
            Assert.That(topology.Speaker.TerminalType, Is.EqualTo(0x0101), "speaker stream links a USB streaming input terminal");
            Assert.That(topology.Speaker.EndpointAddress, Is.EqualTo(UsbAudioDevice.SpeakerEndpoint));
            Assert.That(topology.Speaker.Channels, Is.EqualTo(2));
            Assert.That(topology.Speaker.MaxPacketSize, Is.EqualTo(192));
            Assert.That(topology.Speaker.SyncType, Is.EqualTo(2), "adaptive sink");
            Assert.That(topology.Microphone.TerminalType, Is.EqualTo(0x0101), "microphone stream links a USB streaming output terminal");
            Assert.That(topology.Microphone.EndpointAddress, Is.EqualTo(UsbAudioDevice.MicrophoneEndpoint));
            Assert.That(topology.Microphone.Channels, Is.EqualTo(2));
            Assert.That(topology.Microphone.MaxPacketSize, Is.EqualTo(192));
            Assert.That(topology.Microphone.SyncType, Is.EqualTo(3), "synchronous source");
            Assert.That(topology.PathToTerminal(UsbAudioDevice.SpeakerOutputTerminalId), Is.EqualTo(new[] { 3, 2, 1 }), "speaker <- feature unit <- stream");
            Assert.That(topology.TerminalTypes[UsbAudioDevice.SpeakerOutputTerminalId], Is.EqualTo(0x0301));
            Assert.That(topology.PathToTerminal(UsbAudioDevice.MicrophoneOutputTerminalId), Is.EqualTo(new[] { 5, 4 }), "stream <- microphone");
            Assert.That(topology.TerminalTypes[UsbAudioDevice.MicrophoneInputTerminalId], Is.EqualTo(0x0201));
        });
    }

    [Test]
    public void MonoMicrophone_DescribesOneChannelAndHalfThePacket()
    {
        using var mono = new UsbAudioDevice(microphoneChannels: 1, timeProvider: _clock);
        Uac1Topology topology = Uac1Topology.Parse(mono.ConfigurationDescriptor.ToArray());

        Assert.That(topology.Microphone.Channels, Is.EqualTo(1));
        Assert.That(topology.Microphone.MaxPacketSize, Is.EqualTo(96));
        Assert.That(mono.MicrophonePacketSize, Is.EqualTo(96));
        Assert.That(() => new UsbAudioDevice(microphoneChannels: 3), Throws.InstanceOf<ArgumentOutOfRangeException>());
    }

    [Test]
    public void IsoTransfer_OnAlternateSettingZero_FailsWithEnoent()
    {
        UsbTransfer transfer = UsbTestIo.Isochronous(_audio, _recorder, UsbAudioDevice.SpeakerEndpoint, [Speaker]);

        Assert.That(transfer.Status, Is.EqualTo(UrbStatus.Enoent), "zero-bandwidth setting: no endpoint");
        Assert.That(_audio.SpeakerStreaming, Is.False);
        Assert.That(_audio.SpeakerPackets, Is.Zero);
    }

    [Test]
    public void SetInterfaceAlt1_EnablesTheEndpoints_AndAlt0KillsTheirTransfers()
    {
        Assert.That(_audio.SetInterface(UsbAudioDevice.SpeakerInterface, 1), Is.Zero);
        Assert.That(_audio.SetInterface(UsbAudioDevice.MicrophoneInterface, 1), Is.Zero);
        Assert.That(_audio.SetInterface(UsbAudioDevice.MicrophoneInterface, 2), Is.EqualTo(UrbStatus.Einval), "no alternate setting 2");

        UsbTransfer getInterface = UsbTestIo.Control(_audio, _recorder, 0x81, 0x0A, 0, UsbAudioDevice.SpeakerInterface, 1);
        UsbTransfer output = UsbTestIo.Isochronous(_audio, _recorder, UsbAudioDevice.SpeakerEndpoint, [Speaker, Speaker]);
        UsbTransfer input = UsbTestIo.Isochronous(_audio, _recorder, UsbAudioDevice.MicrophoneEndpoint, [192]);

        Assert.That(getInterface.Data[0], Is.EqualTo(1));
        Assert.That(_audio.SpeakerStreaming && _audio.MicrophoneStreaming, Is.True);
        Assert.That(output.Tag + input.Tag, Is.Zero, "both wait for their frames");
        Assert.That(_audio.PendingCount, Is.EqualTo(2));

        Assert.That(_audio.SetInterface(UsbAudioDevice.SpeakerInterface, 0), Is.Zero);

        Assert.That(output.Tag, Is.EqualTo(1));
        Assert.That(output.Status, Is.EqualTo(UrbStatus.Eshutdown));
        Assert.That(input.Tag, Is.Zero, "the other interface streams on");
        _clock.Advance(TimeSpan.FromMilliseconds(2));
        Assert.That(input.Status, Is.Zero);
        Assert.That(_audio.SpeakerPackets, Is.Zero, "the killed transfer reached nothing");
    }

    [Test]
    public void IsoTransfer_CompletesOnceItsLastFrameHasPassed_AndQueuesBehindTheOneBefore()
    {
        StartStreaming();
        UsbTransfer first = UsbTestIo.Isochronous(_audio, _recorder, UsbAudioDevice.SpeakerEndpoint, Packets(8, Speaker));
        UsbTransfer second = UsbTestIo.Isochronous(_audio, _recorder, UsbAudioDevice.SpeakerEndpoint, Packets(4, Speaker));

        // Submitted in frame 0: the first has frames 1..8 and completes at 9, the second 9..12, completing at 13.
        _clock.Advance(TimeSpan.FromMilliseconds(8));
        Assert.That(first.Tag, Is.Zero);
        _clock.Advance(TimeSpan.FromMilliseconds(1));
        Assert.That(first.Tag, Is.EqualTo(1));
        Assert.That(second.Tag, Is.Zero);
        _clock.Advance(TimeSpan.FromMilliseconds(3));
        Assert.That(second.Tag, Is.Zero);
        _clock.Advance(TimeSpan.FromMilliseconds(1));
        Assert.That(second.Tag, Is.EqualTo(1));
        Assert.That(_recorder.Completed, Is.EqualTo(new[] { first, second }));
        Assert.That(_audio.FrameNumber, Is.EqualTo(13));
    }

    [Test]
    public void IsoOut_RecordsEverySampleExactly()
    {
        StartStreaming();
        byte[] sent = new byte[3 * 8 * Speaker];
        new Random(1234).NextBytes(sent);
        var transfers = new List<UsbTransfer>();
        for (int i = 0; i < 3; i++)
        {
            transfers.Add(UsbTestIo.Isochronous(_audio, _recorder, UsbAudioDevice.SpeakerEndpoint, Packets(8, Speaker), sent.AsSpan(i * 8 * Speaker, 8 * Speaker)));
        }

        _clock.Advance(TimeSpan.FromMilliseconds(30));

        foreach (UsbTransfer t in transfers)
        {
            Assert.That((t.Status, t.ActualLength, t.ErrorCount), Is.EqualTo((0, 8 * Speaker, 0)));
            for (int p = 0; p < 8; p++)
            {
                Assert.That((t.IsoPackets[p].Status, t.IsoPackets[p].ActualLength), Is.EqualTo((0, Speaker)), $"packet {p}");
            }
        }

        Assert.That(_audio.SpeakerData(), Is.EqualTo(sent));
        short[] samples = _audio.SpeakerSamples();
        Assert.That(samples, Has.Length.EqualTo(sent.Length / 2));
        Assert.That(samples[5], Is.EqualTo(BinaryPrimitives.ReadInt16LittleEndian(sent.AsSpan(10))));
        Assert.That(_audio.SpeakerPackets, Is.EqualTo(24));
        Assert.That(_audio.SpeakerBytes, Is.EqualTo(sent.Length));
    }

    [Test]
    public void IsoOut_ShortAndEmptyPackets_AreRecordedAsSent()
    {
        StartStreaming();
        byte[] sent = [.. Enumerable.Range(0, Speaker + 8).Select(i => (byte)i)];
        UsbTransfer t = UsbTestIo.Isochronous(_audio, _recorder, UsbAudioDevice.SpeakerEndpoint, [Speaker, 0, 8], sent);

        _clock.Advance(TimeSpan.FromMilliseconds(4));

        Assert.That((t.Status, t.ActualLength), Is.EqualTo((0, Speaker + 8)));
        Assert.That(t.IsoPackets[1].ActualLength, Is.Zero);
        Assert.That(_audio.SpeakerData(), Is.EqualTo(sent));
        Assert.That(_audio.SpeakerPackets, Is.EqualTo(3));
    }

    [Test]
    public void IsoIn_DeliversTheNextSamplesInEveryPacket_WithoutGapsOrRepeats()
    {
        StartStreaming();
        // Full packets, a short one (25 stereo frames), one too short for any frame, full ones again.
        int[] lengths = [192, 192, 100, 3, 192, 192];
        var transfers = new List<UsbTransfer>();
        for (int i = 0; i < 4; i++)
        {
            transfers.Add(UsbTestIo.Isochronous(_audio, _recorder, UsbAudioDevice.MicrophoneEndpoint, lengths));
        }

        _clock.Advance(TimeSpan.FromMilliseconds(25));

        long expected = 0;
        foreach (UsbTransfer t in transfers)
        {
            Assert.That(t.Status, Is.Zero);
            int offset = 0;
            int total = 0;
            for (int p = 0; p < lengths.Length; p++)
            {
                int frames = Math.Min(48, lengths[p] / 4);
                Assert.That((t.IsoPackets[p].Status, t.IsoPackets[p].ActualLength), Is.EqualTo((0, frames * 4)), $"packet {p}");
                Span<byte> packet = t.Buffer.AsSpan(offset, lengths[p]);
                for (int f = 0; f < frames; f++)
                {
                    short left = BinaryPrimitives.ReadInt16LittleEndian(packet[(f * 4)..]);
                    short right = BinaryPrimitives.ReadInt16LittleEndian(packet[((f * 4) + 2)..]);
                    Assert.That(left, Is.EqualTo(unchecked((short)expected)), $"sample counter, packet {p} frame {f}");
                    Assert.That(right, Is.EqualTo(UsbAudioDevice.MicrophoneSample(expected, 1)));
                    expected++;
                }

                Assert.That(packet[(frames * 4)..].ToArray(), Is.All.Zero, "the rest of a short packet");
                offset += lengths[p];
                total += frames * 4;
            }

            Assert.That(t.ActualLength, Is.EqualTo(total));
        }

        Assert.That(_audio.MicrophoneSamples, Is.EqualTo(expected));
        Assert.That(_audio.MicrophonePackets, Is.EqualTo(4 * lengths.Length));
    }

    [Test]
    public void MicrophoneSine_IsOneKilohertzAtHalfScale()
    {
        Assert.That(UsbAudioDevice.MicrophoneSample(0, 1), Is.Zero);
        Assert.That(UsbAudioDevice.MicrophoneSample(12, 1), Is.EqualTo(16384));
        Assert.That(UsbAudioDevice.MicrophoneSample(36, 1), Is.EqualTo(-16384));
        Assert.That(UsbAudioDevice.MicrophoneSample(48 + 12, 1), Is.EqualTo(16384));
        Assert.That(UsbAudioDevice.MicrophoneSample(65536 + 7, 0), Is.EqualTo(7), "the counter wraps at 16 bits");
    }

    [Test]
    public void MoreThan128Packets_OrNone_AreRefusedAtSubmit()
    {
        StartStreaming();
        UsbTransfer tooMany = UsbTestIo.Isochronous(_audio, _recorder, UsbAudioDevice.SpeakerEndpoint, Packets(129, 8));
        UsbTransfer none = UsbTestIo.Isochronous(_audio, _recorder, UsbAudioDevice.SpeakerEndpoint, []);
        UsbTransfer most = UsbTestIo.Isochronous(_audio, _recorder, UsbAudioDevice.SpeakerEndpoint, Packets(128, 8));

        Assert.That(tooMany.Status, Is.EqualTo(UrbStatus.Einval));
        Assert.That(none.Status, Is.EqualTo(UrbStatus.Einval));
        Assert.That(most.Tag, Is.Zero, "128 is usbfs's limit, and allowed");
        _clock.Advance(TimeSpan.FromMilliseconds(129));
        Assert.That((most.Status, most.ActualLength), Is.EqualTo((0, 128 * 8)));
        Assert.That(_audio.SpeakerPackets, Is.EqualTo(128));
    }

    [Test]
    public void MalformedIsoTransfers_GetUsbfsErrors()
    {
        StartStreaming();
        UsbTransfer tooLong = UsbTestIo.Isochronous(_audio, _recorder, UsbAudioDevice.SpeakerEndpoint, [Speaker + 1]);
        UsbTransfer absurd = UsbTestIo.Isochronous(_audio, _recorder, UsbAudioDevice.SpeakerEndpoint, [98305]);
        UsbTransfer negative = UsbTestIo.Isochronous(_audio, _recorder, UsbAudioDevice.SpeakerEndpoint, [-1, 8]);
        UsbTransfer bulk = UsbTestIo.Data(_audio, _recorder, UsbTransferType.Bulk, UsbAudioDevice.SpeakerEndpoint, 192);
        UsbTransfer noSuchEndpoint = UsbTestIo.Isochronous(_audio, _recorder, 0x03, [8]);
        var beyond = new UsbTransfer(100)
        {
            Type = UsbTransferType.Isochronous,
            Endpoint = UsbAudioDevice.SpeakerEndpoint,
            Length = 100,
            NumberOfPackets = 2,
            Owner = _recorder,
        };
        beyond.IsoPackets[0].Length = 96;
        beyond.IsoPackets[1].Length = 96;
        _audio.Submit(beyond);

        Assert.Multiple(() =>
        {
            Assert.That(tooLong.Status, Is.EqualTo(UrbStatus.Emsgsize), "longer than wMaxPacketSize");
            Assert.That(absurd.Status, Is.EqualTo(UrbStatus.Einval), "beyond usbfs's 98304");
            Assert.That(negative.Status, Is.EqualTo(UrbStatus.Einval));
            Assert.That(bulk.Status, Is.EqualTo(UrbStatus.Einval), "not an isochronous transfer");
            Assert.That(noSuchEndpoint.Status, Is.EqualTo(UrbStatus.Enoent));
            Assert.That(beyond.Status, Is.EqualTo(UrbStatus.Efault), "packets beyond the buffer");
            Assert.That(_audio.PendingCount, Is.Zero);
        });
    }

    [Test]
    public void CancelledIsoTransfer_CompletesWithEnoent_AndMovesNothing()
    {
        StartStreaming();
        UsbTransfer t = UsbTestIo.Isochronous(_audio, _recorder, UsbAudioDevice.MicrophoneEndpoint, Packets(4, 192));

        _audio.Cancel(t);
        _clock.Advance(TimeSpan.FromMilliseconds(10));

        Assert.That((t.Tag, t.Status, t.ActualLength), Is.EqualTo((1, UrbStatus.Enoent, 0)));
        Assert.That(t.IsoPackets[0].Status, Is.EqualTo(UrbStatus.Exdev), "not transferred");
        Assert.That(_audio.MicrophonePackets, Is.Zero);
    }

    [Test]
    public void ShortNotOk_DoesNotApplyToIsochronousIn()
    {
        StartStreaming();
        var t = new UsbTransfer(400)
        {
            Type = UsbTransferType.Isochronous,
            Endpoint = UsbAudioDevice.MicrophoneEndpoint,
            Length = 400,
            NumberOfPackets = 2,
            ShortNotOk = true,
            Owner = _recorder,
        };
        // 190 bytes hold 47 stereo frames: each packet comes back 2 bytes short.
        t.IsoPackets[0].Length = 190;
        t.IsoPackets[1].Length = 190;
        _audio.Submit(t);
        _clock.Advance(TimeSpan.FromMilliseconds(3));

        Assert.That((t.Status, t.ActualLength), Is.EqualTo((0, 2 * 188)));
    }

    [Test]
    public void RealClock_CompletesTransfersByItself()
    {
        using var audio = new UsbAudioDevice();
        Assert.That(audio.SetConfiguration(1), Is.Zero);
        Assert.That(audio.SetInterface(UsbAudioDevice.MicrophoneInterface, 1), Is.Zero);

        UsbTransfer first = UsbTestIo.Isochronous(audio, _recorder, UsbAudioDevice.MicrophoneEndpoint, Packets(5, 192));
        UsbTransfer second = UsbTestIo.Isochronous(audio, _recorder, UsbAudioDevice.MicrophoneEndpoint, Packets(5, 192));

        Assert.That(_recorder.WaitFor(second, TimeSpan.FromSeconds(10)), Is.True);
        Assert.That(_recorder.Completed, Is.EqualTo(new[] { first, second }));
        Assert.That(audio.MicrophoneSamples, Is.EqualTo(10 * 48));
        Assert.That(audio.FrameNumber, Is.GreaterThanOrEqualTo(11));
    }

    [Test]
    public void FeatureUnit_AnswersMuteAndVolume()
    {
        ushort unit = UsbAudioDevice.SpeakerFeatureUnitId << 8;

        Assert.That(ClassGet(0x82, 0x0201, unit, 2), Is.EqualTo(UsbAudioDevice.VolumeMin), "GET_MIN volume, left");
        Assert.That(ClassGet(0x83, 0x0202, unit, 2), Is.EqualTo(UsbAudioDevice.VolumeMax), "GET_MAX volume, right");
        Assert.That(ClassGet(0x84, 0x0201, unit, 2), Is.EqualTo(256), "GET_RES: 1 dB");
        Assert.That(ClassGet(0x81, 0x0100, unit, 1), Is.Zero, "not muted");

        byte[] volume = new byte[2];
        BinaryPrimitives.WriteInt16LittleEndian(volume, -10 * 256);
        Assert.That(UsbTestIo.Control(_audio, _recorder, 0x21, 0x01, 0x0202, unit, 2, volume).Status, Is.Zero);
        Assert.That(UsbTestIo.Control(_audio, _recorder, 0x21, 0x01, 0x0100, unit, 1, [1]).Status, Is.Zero);

        Assert.That(_audio.SpeakerVolume(2), Is.EqualTo(-10 * 256));
        Assert.That(_audio.SpeakerVolume(1), Is.Zero);
        Assert.That(ClassGet(0x81, 0x0202, unit, 2), Is.EqualTo(-10 * 256));
        Assert.That(_audio.SpeakerMuted, Is.True);
        Assert.Multiple(() =>
        {
            Assert.That(UsbTestIo.Control(_audio, _recorder, 0xA1, 0x81, 0x0203, unit, 2).Status, Is.EqualTo(UrbStatus.Epipe), "no channel 3");
            Assert.That(UsbTestIo.Control(_audio, _recorder, 0xA1, 0x81, 0x0101, unit, 1).Status, Is.EqualTo(UrbStatus.Epipe), "mute is master only");
            Assert.That(UsbTestIo.Control(_audio, _recorder, 0xA1, 0x81, 0x0201, 0x0400, 2).Status, Is.EqualTo(UrbStatus.Epipe), "a terminal has no controls");
            Assert.That(UsbTestIo.Control(_audio, _recorder, 0x21, 0x01, 0x0201, unit, 2, [0x00, 0x10]).Status, Is.EqualTo(UrbStatus.Epipe), "+16 dB is out of range");
        });
    }

    [Test]
    public void SamplingFrequency_Is48kHzOnly()
    {
        Assert.That(UsbTestIo.Control(_audio, _recorder, 0x22, 0x01, 0x0100, UsbAudioDevice.SpeakerEndpoint, 3, [0x80, 0xBB, 0x00]).Status, Is.Zero);
        Assert.That(UsbTestIo.Control(_audio, _recorder, 0x22, 0x01, 0x0100, UsbAudioDevice.MicrophoneEndpoint, 3, [0x44, 0xAC, 0x00]).Status, Is.EqualTo(UrbStatus.Epipe), "44.1 kHz");
        UsbTransfer get = UsbTestIo.Control(_audio, _recorder, 0xA2, 0x81, 0x0100, UsbAudioDevice.MicrophoneEndpoint, 3);

        Assert.That((get.Status, get.ActualLength), Is.EqualTo((0, 3)));
        Assert.That(get.Data[..3].ToArray(), Is.EqualTo(new byte[] { 0x80, 0xBB, 0x00 }));
    }

    [Test]
    public void Reset_StopsTheStreams_AndRestoresTheControls()
    {
        StartStreaming();
        ushort unit = UsbAudioDevice.SpeakerFeatureUnitId << 8;
        UsbTestIo.Control(_audio, _recorder, 0x21, 0x01, 0x0100, unit, 1, [1]);
        UsbTransfer t = UsbTestIo.Isochronous(_audio, _recorder, UsbAudioDevice.SpeakerEndpoint, [Speaker]);

        Assert.That(_audio.Reset(), Is.Zero);

        Assert.That(t.Status, Is.EqualTo(UrbStatus.Eshutdown));
        Assert.That(_audio.SpeakerStreaming || _audio.MicrophoneStreaming, Is.False);
        Assert.That(_audio.SpeakerMuted, Is.False);
    }

    [Test]
    public void SpeakerRecordLimit_KeepsTheFirstBytes_AndCountsTheRest()
    {
        StartStreaming();
        _audio.SpeakerRecordLimit = 300;
        UsbTestIo.Isochronous(_audio, _recorder, UsbAudioDevice.SpeakerEndpoint, [Speaker, Speaker], new byte[2 * Speaker]);
        _clock.Advance(TimeSpan.FromMilliseconds(3));

        Assert.That(_audio.SpeakerData(), Has.Length.EqualTo(300));
        Assert.That(_audio.SpeakerBytes, Is.EqualTo(2 * Speaker));
        _audio.ClearSpeakerData();
        Assert.That(_audio.SpeakerSamples(), Is.Empty);
    }

    [Test]
    public void PluggedIntoTheEmulatedHost_ShowsThreeAudioInterfaces()
    {
        using var temp = new TempDirectory();
        using var host = new EmulatedUsbHost(temp.File("sys"));
        var audio = new UsbAudioDevice();
        host.Plug("1-4", audio);

        UsbDeviceInfo info = host.Find("1-4")!;
        Assert.That((info.VendorId, info.ProductId, info.DeviceClass, info.Speed), Is.EqualTo((UsbAudioDevice.DefaultVendorId, UsbAudioDevice.DefaultProductId, (byte)0, UsbSpeed.Full)));
        Assert.That(info.Product, Is.EqualTo("Emulated USB Audio"));
        Assert.That(audio.ActiveConfiguration, Is.EqualTo(1));
        for (int i = 0; i < 3; i++)
        {
            string directory = Path.Combine(host.SysfsRoot, "bus", "usb", "devices", $"1-4:1.{i}");
            Assert.That(File.ReadAllText(Path.Combine(directory, "bInterfaceClass")).Trim(), Is.EqualTo("01"), $"interface {i}");
            Assert.That(File.ReadAllText(Path.Combine(directory, "bInterfaceSubClass")).Trim(), Is.EqualTo(i == 0 ? "01" : "02"));
        }

        using IUsbHostDevice handle = host.Open("1-4");
        Assert.That(handle, Is.SameAs(audio));
    }

    private static int[] Packets(int count, int length) => Enumerable.Repeat(length, count).ToArray();

    private void StartStreaming()
    {
        Assert.That(_audio.SetInterface(UsbAudioDevice.SpeakerInterface, 1), Is.Zero);
        Assert.That(_audio.SetInterface(UsbAudioDevice.MicrophoneInterface, 1), Is.Zero);
    }

    private int ClassGet(byte request, ushort value, ushort index, ushort length)
    {
        UsbTransfer t = UsbTestIo.Control(_audio, _recorder, 0xA1, request, value, index, length);
        Assert.That((t.Status, t.ActualLength), Is.EqualTo((0, (int)length)), $"request 0x{request:x2} wValue 0x{value:x4}");
        return length == 1 ? t.Data[0] : BinaryPrimitives.ReadInt16LittleEndian(t.Data);
    }
}
