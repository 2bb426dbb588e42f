using System.Buffers.Binary;

namespace XenPvUsb.Tests.Devices;

/// <summary>
/// What a USB Audio Class 1.0 host driver makes of a configuration descriptor set (the checks of
/// snd-usb-audio's validate.c and the layouts of UAC1 §4.3-4.6 and Frmts10 §2.2.5), asserting as it walks.
/// </summary>
internal sealed class Uac1Topology
{
    private readonly Dictionary<int, int> _sources = new();

    public int ControlInterface { get; private set; } = -1;

    public List<int> Collection { get; } = new();

    public int HeaderTotalLength { get; private set; }

    /// <summary>Bytes of class-specific descriptors after the AudioControl interface descriptor.</summary>
    public int ClassSpecificControlLength { get; private set; }

    public Dictionary<int, int> TerminalTypes { get; } = new();

    public Dictionary<int, int> TerminalChannels { get; } = new();

    public Uac1Stream Speaker { get; private set; } = new();

    public Uac1Stream Microphone { get; private set; } = new();

    public static Uac1Topology Parse(byte[] config)
    {
        var t = new Uac1Topology();
        var streams = new List<Uac1Stream>();
        int iface = -1;
        int alt = 0;
        int subClass = 0;
        int endpointsInAlt = 0;
        Uac1Stream? stream = null;
        bool lastWasAudioEndpoint = false;
        for (int i = config[0]; i < config.Length; i += config[i])
        {
            Assert.That(config[i], Is.GreaterThanOrEqualTo(2), $"descriptor at {i}");
            Assert.That(i + config[i], Is.LessThanOrEqualTo(config.Length), $"descriptor at {i} runs past the set");
            ReadOnlySpan<byte> d = config.AsSpan(i, config[i]);
            bool audioEndpoint = false;
            switch (d[1])
            {
                case 0x04:
                    Assert.That(d.Length, Is.EqualTo(9));
                    Assert.That(d[5], Is.EqualTo(0x01), "audio class");
                    Assert.That(d[7], Is.Zero, "UAC1: bInterfaceProtocol 0");
                    iface = d[2];
                    alt = d[3];
                    subClass = d[6];
                    endpointsInAlt = d[4];
                    stream = null;
                    if (subClass == 0x01)
                    {
                        Assert.That(t.ControlInterface, Is.EqualTo(-1), "one AudioControl interface");
                        t.ControlInterface = iface;
                        Assert.That(endpointsInAlt, Is.Zero, "no interrupt status endpoint");
                    }
                    else
                    {
                        Assert.That(subClass, Is.EqualTo(0x02), "AudioStreaming");
                        Assert.That(endpointsInAlt, Is.EqualTo(alt == 0 ? 0 : 1), "alt 0 is zero-bandwidth, alt 1 streams");
                        if (alt != 0)
                        {
                            stream = new Uac1Stream { Interface = iface };
                            streams.Add(stream);
                        }
                    }

                    break;
                case 0x24 when subClass == 0x01:
                    t.ClassSpecificControlLength += d.Length;
                    t.ParseControl(d);
                    break;
                case 0x24 when subClass == 0x02:
                    Assert.That(stream, Is.Not.Null, "AS class descriptors belong to a streaming alternate setting");
                    ParseStreaming(stream!, d);
                    break;
                case 0x05:
                    Assert.That(stream, Is.Not.Null);
                    Assert.That(d.Length, Is.EqualTo(9), "UAC1 §4.6.1.1: audio endpoints carry bRefresh and bSynchAddress");
                    Assert.That(d[3] & 3, Is.EqualTo(1), "isochronous");
                    stream!.EndpointAddress = d[2];
                    stream.SyncType = (d[3] >> 2) & 3;
                    stream.MaxPacketSize = BinaryPrimitives.ReadUInt16LittleEndian(d[4..]);
                    Assert.That(d[6], Is.EqualTo(1), "bInterval 1: every frame");
                    Assert.That(d[8], Is.Zero, "no synch endpoint");
                    audioEndpoint = true;
                    break;
                case 0x25:
                    Assert.That(lastWasAudioEndpoint, Is.True, "the class-specific endpoint descriptor follows its endpoint");
                    Assert.That(d.Length, Is.EqualTo(7));
                    Assert.That(d[2], Is.EqualTo(0x01), "EP_GENERAL");
                    stream!.EndpointAttributes = d[3];
                    break;
                default:
                    Assert.Fail($"unexpected descriptor type 0x{d[1]:x2} at {i}");
                    break;
            }

            lastWasAudioEndpoint = audioEndpoint;
        }

        Assert.That(streams, Has.Count.EqualTo(2));
        foreach (Uac1Stream s in streams)
        {
            Assert.That(t.Collection, Does.Contain(s.Interface), "every streaming interface is in the header's collection");
            Assert.That(t.TerminalTypes.ContainsKey(s.TerminalLink), Is.True, "bTerminalLink names a terminal");
            s.TerminalType = t.TerminalTypes[s.TerminalLink];
            Assert.That(s.Rates, Is.EqualTo(new[] { 48000 }));
            Assert.That(s.MaxPacketSize, Is.EqualTo(48 * s.Channels * s.SubframeSize), "one frame of samples");
            Assert.That(s.EndpointAttributes & 1, Is.EqualTo(1), "sampling frequency control");
            int inputTerminal = t.PathToTerminal(s.TerminalLink)[^1];
            Assert.That(t.TerminalChannels[inputTerminal], Is.EqualTo(s.Channels), "the chain's channels are the stream's");
            if ((s.EndpointAddress & 0x80) != 0)
            {
                t.Microphone = s;
            }
            else
            {
                t.Speaker = s;
            }
        }

        return t;
    }

    /// <summary>The ids from <paramref name="id"/> back through each bSourceID to the input terminal that starts the chain.</summary>
    public int[] PathToTerminal(int id)
    {
        var path = new List<int> { id };
        while (_sources.TryGetValue(path[^1], out int source))
        {
            Assert.That(path, Does.Not.Contain(source), "no loops");
            path.Add(source);
        }

        return [.. path];
    }

    private static void ParseStreaming(Uac1Stream s, ReadOnlySpan<byte> d)
    {
        switch (d[2])
        {
            case 0x01:
                Assert.That(d.Length, Is.EqualTo(7), "AS_GENERAL");
                s.TerminalLink = d[3];
                Assert.That(BinaryPrimitives.ReadUInt16LittleEndian(d[5..]), Is.EqualTo(0x0001), "PCM");
                break;
            case 0x02:
                Assert.That(d[3], Is.EqualTo(0x01), "FORMAT_TYPE_I");
                s.Channels = d[4];
                s.SubframeSize = d[5];
                Assert.That(d[6], Is.EqualTo(16), "bBitResolution");
                int rates = d[7];
                Assert.That(rates, Is.GreaterThan(0), "discrete rates");
                Assert.That(d.Length, Is.EqualTo(8 + (3 * rates)));
                for (int r = 0; r < rates; r++)
                {
                    s.Rates.Add(d[8 + (3 * r)] | (d[9 + (3 * r)] << 8) | (d[10 + (3 * r)] << 16));
                }

                break;
            default:
                Assert.Fail($"unexpected AS subtype {d[2]}");
                break;
        }
    }

    private void ParseControl(ReadOnlySpan<byte> d)
    {
        switch (d[2])
        {
            case 0x01:
                Assert.That(BinaryPrimitives.ReadUInt16LittleEndian(d[3..]), Is.EqualTo(0x0100), "bcdADC 1.00");
                HeaderTotalLength = BinaryPrimitives.ReadUInt16LittleEndian(d[5..]);
                Assert.That(d.Length, Is.EqualTo(8 + d[7]), "bLength = 8 + bInCollection");
                for (int n = 0; n < d[7]; n++)
                {
                    Collection.Add(d[8 + n]);
                }

                break;
            case 0x02:
                Assert.That(d.Length, Is.EqualTo(12), "input terminal");
                AddEntity(d[3]);
                TerminalTypes[d[3]] = BinaryPrimitives.ReadUInt16LittleEndian(d[4..]);
                TerminalChannels[d[3]] = d[7];
                int config = BinaryPrimitives.ReadUInt16LittleEndian(d[8..]);
                Assert.That(int.PopCount(config), Is.LessThanOrEqualTo(d[7]), "wChannelConfig names no more channels than there are");
                break;
            case 0x03:
                Assert.That(d.Length, Is.EqualTo(9), "output terminal");
                AddEntity(d[3]);
                TerminalTypes[d[3]] = BinaryPrimitives.ReadUInt16LittleEndian(d[4..]);
                AddSource(d[3], d[7]);
                break;
            case 0x06:
                AddEntity(d[3]);
                AddSource(d[3], d[4]);
                int controlSize = d[5];
                Assert.That(controlSize, Is.GreaterThan(0));
                int channels = TerminalChannels[PathToTerminal(d[3])[^1]];
                Assert.That(d.Length, Is.EqualTo(7 + ((channels + 1) * controlSize)), "feature unit: bmaControls for master and each channel");
                break;
            default:
                Assert.Fail($"unexpected AC subtype {d[2]}");
                break;
        }
    }

    private void AddEntity(int id)
    {
        Assert.That(id, Is.Not.Zero, "ids start at 1");
        Assert.That(TerminalTypes.ContainsKey(id) || _sources.ContainsKey(id), Is.False, $"id {id} used twice");
    }

    private void AddSource(int id, int source)
    {
        Assert.That(TerminalTypes.ContainsKey(source) || _sources.ContainsKey(source), Is.True, $"{id}'s source {source} is described before it");
        _sources[id] = source;
    }
}

internal sealed class Uac1Stream
{
    public int Interface { get; set; }

    public int TerminalLink { get; set; }

    public int TerminalType { get; set; }

    public int Channels { get; set; }

    public int SubframeSize { get; set; }

    public List<int> Rates { get; } = new();

    public int EndpointAddress { get; set; }

    public int SyncType { get; set; }

    public int MaxPacketSize { get; set; }

    public int EndpointAttributes { get; set; }
}
