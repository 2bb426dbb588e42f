using System.Buffers.Binary;
using XenPvUsb.Usb;

namespace XenPvUsb.Simulation.Devices;

/// <summary>
/// A full-speed USB Audio Class 1.0 device, a speaker and a microphone, the kind Linux's snd-usb-audio
/// drives (and QEMU's usb-audio is): an AudioControl interface (0) with two terminal chains, and two
/// AudioStreaming interfaces, each with a zero-bandwidth alternate setting 0 and an alternate setting 1
/// carrying 48 kHz 16-bit PCM on an isochronous endpoint with a 1 ms interval.
/// </summary>
/// <remarks>
/// Topology (UAC1 §3.5, descriptors §4.3.2): speaker: USB streaming input terminal 1 → feature unit 2
/// (master mute, volume per channel) → speaker output terminal 3, fed by interface 1's OUT endpoint 0x01
/// (stereo, 192 bytes a frame, adaptive). Microphone: microphone input terminal 4 → USB streaming output
/// terminal 5, read through interface 2's IN endpoint 0x82 (mono or stereo, synchronous). Both endpoints
/// take a sampling frequency control (SET_CUR/GET_CUR, 48000 only).
///
/// The speaker keeps every byte it is sent (up to <see cref="SpeakerRecordLimit"/>; later ones are counted,
/// not kept). The microphone sends a known waveform, one sample frame per running sample number n, in
/// order and without gaps: channel 0 carries n itself (as a wrapping 16-bit counter), channel 1 (stereo)
/// a 1 kHz sine indexed by n (<see cref="MicrophoneSample"/>). Every IN packet carries the next
/// <see cref="SamplesPerFrame"/> sample frames, or as many whole ones as fit a shorter packet, so a reader
/// checks continuity packet after packet: a lost packet shows as a jump, a repeated one as a step back.
/// The count goes on across stream stops and resets.
/// </remarks>
public sealed class UsbAudioDevice : EmulatedUsbDevice
{
    public const ushort DefaultVendorId = 0x1209;
    public const ushort DefaultProductId = 0x5A04;

    public const byte ControlInterface = 0;
    public const byte SpeakerInterface = 1;
    public const byte MicrophoneInterface = 2;
    public const byte SpeakerEndpoint = 0x01;
    public const byte MicrophoneEndpoint = 0x82;

    public const byte SpeakerInputTerminalId = 1;
    public const byte SpeakerFeatureUnitId = 2;
    public const byte SpeakerOutputTerminalId = 3;
    public const byte MicrophoneInputTerminalId = 4;
    public const byte MicrophoneOutputTerminalId = 5;

    public const int SampleRate = 48000;
    public const int BytesPerSample = 2;
    public const int SpeakerChannels = 2;

    /// <summary>Sample frames in one 1 ms frame at 48 kHz.</summary>
    public const int SamplesPerFrame = SampleRate / 1000;

    /// <summary>The speaker endpoint's wMaxPacketSize: 48 stereo 16-bit sample frames.</summary>
    public const int SpeakerPacketSize = SamplesPerFrame * SpeakerChannels * BytesPerSample;

    /// <summary>Volume range of the feature unit, in 1/256 dB (UAC1 §5.2.2.4.3.2): -60 dB to 0 dB in 1 dB steps.</summary>
    public const short VolumeMin = -60 * 256;
    public const short VolumeMax = 0;
    public const short VolumeResolution = 256;

    // UAC1 A.4-A.10: descriptor types and subtypes, request codes, control selectors.
    private const byte CsInterface = 0x24;
    private const byte CsEndpoint = 0x25;
    private const byte AudioClass = 0x01;
    private const byte AudioControlSubClass = 0x01;
    private const byte AudioStreamingSubClass = 0x02;
    private const byte HeaderSubtype = 0x01;
    private const byte InputTerminalSubtype = 0x02;
    private const byte OutputTerminalSubtype = 0x03;
    private const byte FeatureUnitSubtype = 0x06;
    private const byte AsGeneralSubtype = 0x01;
    private const byte FormatTypeSubtype = 0x02;
    private const byte EpGeneralSubtype = 0x01;
    private const ushort UsbStreamingTerminal = 0x0101;
    private const ushort MicrophoneTerminal = 0x0201;
    private const ushort SpeakerTerminal = 0x0301;
    private const byte SetCur = 0x01;
    private const byte GetCur = 0x81;
    private const byte GetMin = 0x82;
    private const byte GetMax = 0x83;
    private const byte GetRes = 0x84;
    private const byte MuteControl = 0x01;
    private const byte VolumeControl = 0x02;
    private const byte SamplingFrequencyControl = 0x01;

    // Isochronous, synchronisation type in bits 3:2 (USB 2.0 table 9-13).
    private const UsbTransferTypeBits IsoAdaptive = (UsbTransferTypeBits)0x09;
    private const UsbTransferTypeBits IsoSynchronous = (UsbTransferTypeBits)0x0D;

    private static readonly short[] s_sine = BuildSine();

    private readonly short[] _volume = [0, 0];
    private byte[] _speakerData = new byte[64 * 1024];
    private int _speakerLength;
    private long _speakerBytes;
    private long _speakerPackets;
    private long _microphoneSamples;
    private long _microphonePackets;
    private bool _muted;

    /// <param name="microphoneChannels">1 (mono) or 2 (stereo, the default).</param>
    /// <param name="timeProvider">The clock the isochronous frames run on; the system clock by default.</param>
    public UsbAudioDevice(int microphoneChannels = 2, TimeProvider? timeProvider = null)
        : base(
            UsbSpeed.Full,
            UsbDescriptors.Device(0x0200, 0, 0, 0, 64, DefaultVendorId, DefaultProductId, 0x0100, 1, 2, 3),
            BuildConfiguration(microphoneChannels),
            ["XenPvUsb", "Emulated USB Audio", "XPA0001"],
            timeProvider: timeProvider)
    {
        MicrophoneChannels = microphoneChannels;
    }

    public int MicrophoneChannels { get; }

    /// <summary>The microphone endpoint's wMaxPacketSize: 48 sample frames of <see cref="MicrophoneChannels"/> 16-bit samples.</summary>
    public int MicrophonePacketSize => SamplesPerFrame * MicrophoneChannels * BytesPerSample;

    /// <summary>Speaker bytes kept for <see cref="SpeakerSamples"/> at most (default 16 MiB, 87 s of stereo); more are counted only.</summary>
    public int SpeakerRecordLimit { get; set; } = 16 * 1024 * 1024;

    /// <summary>True while the speaker's streaming interface is in alternate setting 1.</summary>
    public bool SpeakerStreaming => AlternateSetting(SpeakerInterface) == 1;

    /// <summary>True while the microphone's streaming interface is in alternate setting 1.</summary>
    public bool MicrophoneStreaming => AlternateSetting(MicrophoneInterface) == 1;

    /// <summary>OUT packets the speaker was served (zero-length ones included).</summary>
    public long SpeakerPackets
    {
        get
        {
            lock (SyncRoot)
            {
                return _speakerPackets;
            }
        }
    }

    /// <summary>Bytes the speaker received, kept or not.</summary>
    public long SpeakerBytes
    {
        get
        {
            lock (SyncRoot)
            {
                return _speakerBytes;
            }
        }
    }

    /// <summary>IN packets the microphone sent.</summary>
    public long MicrophonePackets
    {
        get
        {
            lock (SyncRoot)
            {
                return _microphonePackets;
            }
        }
    }

    /// <summary>Sample frames the microphone sent: the running sample number of the next one.</summary>
    public long MicrophoneSamples
    {
        get
        {
            lock (SyncRoot)
            {
                return _microphoneSamples;
            }
        }
    }

    /// <summary>The feature unit's master mute (SET_CUR MUTE_CONTROL). Samples are recorded muted or not.</summary>
    public bool SpeakerMuted
    {
        get
        {
            lock (SyncRoot)
            {
                return _muted;
            }
        }
    }

    /// <summary>Volume of speaker channel 1 (left) or 2 (right), in 1/256 dB.</summary>
    public short SpeakerVolume(int channel)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(channel, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(channel, SpeakerChannels);
        lock (SyncRoot)
        {
            return _volume[channel - 1];
        }
    }

    /// <summary>The sample value channel <paramref name="channel"/> of the microphone carries in sample frame <paramref name="sampleNumber"/>.</summary>
    public static short MicrophoneSample(long sampleNumber, int channel) =>
        channel == 0 ? unchecked((short)sampleNumber) : s_sine[(int)(sampleNumber % SamplesPerFrame)];

    /// <summary>The speaker's kept bytes, as received.</summary>
    public byte[] SpeakerData()
    {
        lock (SyncRoot)
        {
            return _speakerData.AsSpan(0, _speakerLength).ToArray();
        }
    }

    /// <summary>The speaker's kept bytes as 16-bit little-endian samples, channels interleaved (left, right, left...).</summary>
    public short[] SpeakerSamples()
    {
        lock (SyncRoot)
        {
            short[] samples = new short[_speakerLength / BytesPerSample];
            for (int i = 0; i < samples.Length; i++)
            {
                samples[i] = BinaryPrimitives.ReadInt16LittleEndian(_speakerData.AsSpan(i * BytesPerSample));
            }

            return samples;
        }
    }

    /// <summary>Forgets the kept speaker bytes (the counts stay).</summary>
    public void ClearSpeakerData()
    {
        lock (SyncRoot)
        {
            _speakerLength = 0;
        }
    }

    protected override int OnDataTransferLocked(UsbTransfer transfer, out int actualLength)
    {
        // Only isochronous endpoints here, and the base routes those elsewhere.
        actualLength = 0;
        return UrbStatus.Einval;
    }

    protected override int OnIsochronousPacketLocked(byte endpoint, long frame, Span<byte> data, out int actualLength)
    {
        switch (endpoint)
        {
            case SpeakerEndpoint:
                _speakerPackets++;
                _speakerBytes += data.Length;
                KeepSpeakerBytesLocked(data);
                actualLength = data.Length;
                return UrbStatus.Success;
            case MicrophoneEndpoint:
                int frameBytes = MicrophoneChannels * BytesPerSample;
                int count = Math.Min(SamplesPerFrame, data.Length / frameBytes);
                for (int i = 0; i < count; i++)
                {
                    for (int channel = 0; channel < MicrophoneChannels; channel++)
                    {
                        BinaryPrimitives.WriteInt16LittleEndian(
                            data[((i * frameBytes) + (channel * BytesPerSample))..],
                            MicrophoneSample(_microphoneSamples + i, channel));
                    }
                }

                _microphoneSamples += count;
                _microphonePackets++;
                actualLength = count * frameBytes;
                return UrbStatus.Success;
            default:
                actualLength = 0;
                return UrbStatus.Exdev;
        }
    }

    protected override int OnControlLocked(UsbSetupPacket setup, Span<byte> data, out int actualLength)
    {
        actualLength = 0;
        if (setup.Kind != 1)
        {
            return UrbStatus.Epipe;
        }

        return setup.Recipient switch
        {
            1 when setup.Index == ((SpeakerFeatureUnitId << 8) | ControlInterface) => FeatureUnitRequestLocked(setup, data, out actualLength),
            2 when setup.Index is SpeakerEndpoint or MicrophoneEndpoint => SamplingFrequencyRequest(setup, data, out actualLength),
            _ => UrbStatus.Epipe,
        };
    }

    protected override void OnResetLocked()
    {
        _muted = false;
        Array.Clear(_volume);
    }

    private static int SamplingFrequencyRequest(UsbSetupPacket setup, Span<byte> data, out int actualLength)
    {
        actualLength = 0;
        if (setup.Value != SamplingFrequencyControl << 8 || setup.Length != 3)
        {
            return UrbStatus.Epipe;
        }

        switch (setup.Request)
        {
            case SetCur when !setup.IsIn:
                // One discrete rate (tSamFreq): anything else is refused.
                if ((data[0] | (data[1] << 8) | (data[2] << 16)) != SampleRate)
                {
                    return UrbStatus.Epipe;
                }

                actualLength = 3;
                return UrbStatus.Success;
            case GetCur when setup.IsIn:
                data[0] = SampleRate & 0xFF;
                data[1] = (SampleRate >> 8) & 0xFF;
                data[2] = SampleRate >> 16;
                actualLength = 3;
                return UrbStatus.Success;
            default:
                return UrbStatus.Epipe;
        }
    }

    // UAC1 §5.2.2.4: wValue = control selector << 8 | channel number, wIndex = unit id << 8 | interface.
    private int FeatureUnitRequestLocked(UsbSetupPacket setup, Span<byte> data, out int actualLength)
    {
        actualLength = 0;
        int selector = setup.Value >> 8;
        int channel = setup.Value & 0xFF;
        if (selector == MuteControl && channel == 0 && setup.Length == 1)
        {
            switch (setup.Request)
            {
                case SetCur when !setup.IsIn:
                    _muted = data[0] != 0;
                    actualLength = 1;
                    return UrbStatus.Success;
                case GetCur when setup.IsIn:
                    data[0] = _muted ? (byte)1 : (byte)0;
                    actualLength = 1;
                    return UrbStatus.Success;
                default:
                    return UrbStatus.Epipe;
            }
        }

        if (selector != VolumeControl || channel is < 1 or > SpeakerChannels || setup.Length != 2)
        {
            return UrbStatus.Epipe;
        }

        short value;
        switch (setup.Request)
        {
            case SetCur when !setup.IsIn:
                value = BinaryPrimitives.ReadInt16LittleEndian(data);
                if (value < VolumeMin || value > VolumeMax)
                {
                    return UrbStatus.Epipe;
                }

                _volume[channel - 1] = value;
                actualLength = 2;
                return UrbStatus.Success;
            case GetCur when setup.IsIn:
                value = _volume[channel - 1];
                break;
            case GetMin when setup.IsIn:
                value = VolumeMin;
                break;
            case GetMax when setup.IsIn:
                value = VolumeMax;
                break;
            case GetRes when setup.IsIn:
                value = VolumeResolution;
                break;
            default:
                return UrbStatus.Epipe;
        }

        BinaryPrimitives.WriteInt16LittleEndian(data, value);
        actualLength = 2;
        return UrbStatus.Success;
    }

    private static byte[] BuildConfiguration(int microphoneChannels)
    {
        if (microphoneChannels is not (1 or 2))
        {
            throw new ArgumentOutOfRangeException(nameof(microphoneChannels), microphoneChannels, "The microphone is mono or stereo.");
        }

        ushort microphoneChannelConfig = microphoneChannels == 2 ? (ushort)0x0003 : (ushort)0x0000;
        byte[][] controlBody =
        [
            InputTerminal(SpeakerInputTerminalId, UsbStreamingTerminal, SpeakerChannels, 0x0003),
            // bControlSize 1; bmaControls: master mute, then volume on each channel.
            [10, CsInterface, FeatureUnitSubtype, SpeakerFeatureUnitId, SpeakerInputTerminalId, 1, 0x01, 0x02, 0x02, 0],
            OutputTerminal(SpeakerOutputTerminalId, SpeakerTerminal, SpeakerFeatureUnitId),
            InputTerminal(MicrophoneInputTerminalId, MicrophoneTerminal, (byte)microphoneChannels, microphoneChannelConfig),
            OutputTerminal(MicrophoneOutputTerminalId, UsbStreamingTerminal, MicrophoneInputTerminalId),
        ];
        int classSpecific = 10;
        foreach (byte[] part in controlBody)
        {
            classSpecific += part.Length;
        }

        // Header: bcdADC 1.00, wTotalLength of the class-specific AC descriptors, the two streaming interfaces.
        byte[] header = [10, CsInterface, HeaderSubtype, 0x00, 0x01, (byte)classSpecific, (byte)(classSpecific >> 8), 2, SpeakerInterface, MicrophoneInterface];
        int microphonePacket = SamplesPerFrame * microphoneChannels * BytesPerSample;
        return UsbDescriptors.Configuration(
            1,
            0,
            0,
            50,
            [
                UsbDescriptors.Interface(ControlInterface, 0, 0, AudioClass, AudioControlSubClass, 0),
                header,
                .. controlBody,
                UsbDescriptors.Interface(SpeakerInterface, 0, 0, AudioClass, AudioStreamingSubClass, 0),
                UsbDescriptors.Interface(SpeakerInterface, 1, 1, AudioClass, AudioStreamingSubClass, 0),
                AsGeneral(SpeakerInputTerminalId),
                FormatTypeI(SpeakerChannels),
                AudioEndpoint(SpeakerEndpoint, IsoAdaptive, SpeakerPacketSize),
                IsoEndpointGeneral(),
                UsbDescriptors.Interface(MicrophoneInterface, 0, 0, AudioClass, AudioStreamingSubClass, 0),
                UsbDescriptors.Interface(MicrophoneInterface, 1, 1, AudioClass, AudioStreamingSubClass, 0),
                AsGeneral(MicrophoneOutputTerminalId),
                FormatTypeI((byte)microphoneChannels),
                AudioEndpoint(MicrophoneEndpoint, IsoSynchronous, (ushort)microphonePacket),
                IsoEndpointGeneral(),
            ]);
    }

    // UAC1 §4.3.2.1: no associated terminal, no channel or terminal names.
    private static byte[] InputTerminal(byte id, ushort type, byte channels, ushort channelConfig) =>
        [12, CsInterface, InputTerminalSubtype, id, (byte)type, (byte)(type >> 8), 0, channels, (byte)channelConfig, (byte)(channelConfig >> 8), 0, 0];

    // UAC1 §4.3.2.2.
    private static byte[] OutputTerminal(byte id, ushort type, byte source) =>
        [9, CsInterface, OutputTerminalSubtype, id, (byte)type, (byte)(type >> 8), 0, source, 0];

    // UAC1 §4.5.2: terminal link, bDelay 1 frame, wFormatTag PCM.
    private static byte[] AsGeneral(byte terminal) => [7, CsInterface, AsGeneralSubtype, terminal, 1, 0x01, 0x00];

    // Audio Data Formats 1.0 §2.2.5: type I, 2-byte subframes of 16 bits, one discrete rate.
    private static byte[] FormatTypeI(byte channels) =>
        [11, CsInterface, FormatTypeSubtype, 0x01, channels, BytesPerSample, 16, 1, SampleRate & 0xFF, (SampleRate >> 8) & 0xFF, SampleRate >> 16];

    // UAC1 §4.6.1.1: the standard endpoint descriptor with bRefresh and bSynchAddress (9 bytes), bInterval 1 ms.
    private static byte[] AudioEndpoint(byte address, UsbTransferTypeBits attributes, ushort maxPacketSize) =>
        [9, UsbDescriptors.EndpointType, address, (byte)attributes, (byte)maxPacketSize, (byte)(maxPacketSize >> 8), 1, 0, 0];

    // UAC1 §4.6.1.2: sampling frequency control, no pitch control, no lock delay.
    private static byte[] IsoEndpointGeneral() => [7, CsEndpoint, EpGeneralSubtype, 0x01, 0, 0, 0];

    private static short[] BuildSine()
    {
        // 1 kHz at 48 kHz is 48 samples a period, half of full scale.
        short[] table = new short[SamplesPerFrame];
        for (int i = 0; i < table.Length; i++)
        {
            table[i] = (short)Math.Round(16384 * Math.Sin(2 * Math.PI * i / SamplesPerFrame));
        }

        return table;
    }

    private int AlternateSetting(int interfaceNumber)
    {
        lock (SyncRoot)
        {
            return AlternateSettingLocked(interfaceNumber);
        }
    }

    private void KeepSpeakerBytesLocked(ReadOnlySpan<byte> data)
    {
        int room = Math.Max(0, SpeakerRecordLimit - _speakerLength);
        int keep = Math.Min(room, data.Length);
        if (keep == 0)
        {
            return;
        }

        if (_speakerLength + keep > _speakerData.Length)
        {
            Array.Resize(ref _speakerData, Math.Max(_speakerLength + keep, Math.Min(SpeakerRecordLimit, _speakerData.Length * 2)));
        }

        data[..keep].CopyTo(_speakerData.AsSpan(_speakerLength));
        _speakerLength += keep;
    }
}
