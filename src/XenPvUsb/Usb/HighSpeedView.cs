using System.Buffers.Binary;

namespace XenPvUsb.Usb;

/// <summary>
/// A SuperSpeed device as a guest sees it: usbif has no SuperSpeed, so a device on a USB 3 port is shown at
/// high speed, and the descriptors the guest reads are the ones a high-speed device would have (USB 2.0
/// §9.6; what Linux's usb_parse_configuration accepts at high speed). Transfers keep their real sizes on
/// the device side. Every input comes from a device (which may be hostile, or reprogrammed): lengths are
/// bounds-checked, and a descriptor that does not parse ends the walk rather than the daemon.
/// </summary>
public static class HighSpeedView
{
    public const ushort BcdUsb = 0x0200;
    public const byte MaxPacketSize0 = 64;
    public const int DeviceDescriptorLength = 18;
    public const int DeviceQualifierLength = 10;
    public const int ConfigurationHeaderLength = 9;

    public const byte DeviceType = 1;
    public const byte ConfigurationType = 2;
    public const byte EndpointType = 5;
    public const byte DeviceQualifierType = 6;
    public const byte OtherSpeedConfigurationType = 7;
    public const byte BosType = 15;
    public const byte SuperSpeedEndpointCompanionType = 0x30;
    public const byte SuperSpeedPlusIsochCompanionType = 0x31;

    private const int HighSpeedMaxPacket = 1024;
    private const int HighSpeedMaxTransactions = 3;
    private const int BulkMaxPacket = 512;

    /// <summary>The device descriptor at high speed (bcdUSB 2.00, 64-byte ep0), or null if it is not a device descriptor.</summary>
    public static byte[]? Device(ReadOnlySpan<byte> device)
    {
        if (device.Length < DeviceDescriptorLength || device[0] < DeviceDescriptorLength || device[1] != DeviceType)
        {
            return null;
        }
        byte[] hs = device[..DeviceDescriptorLength].ToArray();
        hs[0] = DeviceDescriptorLength;
        BinaryPrimitives.WriteUInt16LittleEndian(hs.AsSpan(2), BcdUsb);
        hs[7] = MaxPacketSize0;
        return hs;
    }

    /// <summary>The device qualifier a high-speed device answers (USB 2.0 §9.6.2), from its high-speed device descriptor.</summary>
    public static byte[] DeviceQualifier(ReadOnlySpan<byte> highSpeedDevice)
    {
        byte[] q = new byte[DeviceQualifierLength];
        q[0] = DeviceQualifierLength;
        q[1] = DeviceQualifierType;
        BinaryPrimitives.WriteUInt16LittleEndian(q.AsSpan(2), BcdUsb);
        highSpeedDevice.Slice(4, 3).CopyTo(q.AsSpan(4)); // class, subclass, protocol
        q[7] = MaxPacketSize0;
        q[8] = highSpeedDevice[17];
        return q;
    }

    /// <summary>
    /// The configuration descriptor set <paramref name="index"/> in what usbfs's read() gives (the device
    /// descriptor, then each configuration's descriptors, wTotalLength bytes each), or an empty span.
    /// </summary>
    public static ReadOnlySpan<byte> FindConfiguration(ReadOnlySpan<byte> descriptors, int index)
    {
        if (descriptors.Length < DeviceDescriptorLength || descriptors[1] != DeviceType || index < 0 || index >= descriptors[17])
        {
            return [];
        }
        int at = DeviceDescriptorLength;
        for (int i = 0; ; i++)
        {
            if (descriptors.Length - at < ConfigurationHeaderLength || descriptors[at + 1] != ConfigurationType)
            {
                return [];
            }
            int total = BinaryPrimitives.ReadUInt16LittleEndian(descriptors[(at + 2)..]);
            if (total < ConfigurationHeaderLength || total > descriptors.Length - at)
            {
                return [];
            }
            if (i == index)
            {
                return descriptors.Slice(at, total);
            }
            at += total;
        }
    }

    /// <summary>
    /// A SuperSpeed configuration descriptor set as a high-speed one: bMaxPower in 2 mA units (at most
    /// 500 mA), bulk endpoints of 512 bytes, interrupt and isochronous endpoints with the companion's bytes
    /// per service interval in high-speed encoding (up to 3 transactions of 1024 bytes a microframe), the
    /// SuperSpeed endpoint companions and SuperSpeedPlus isochronous companions taken out, wTotalLength
    /// what is left. Null if the header is not a configuration descriptor. Descriptors after one whose
    /// bLength does not fit are dropped.
    /// </summary>
    public static byte[]? Configuration(ReadOnlySpan<byte> config)
    {
        if (config.Length < ConfigurationHeaderLength || config[0] < ConfigurationHeaderLength || config[1] != ConfigurationType)
        {
            return null;
        }
        int total = Math.Min(config.Length, BinaryPrimitives.ReadUInt16LittleEndian(config[2..]));
        byte[] output = new byte[Math.Max(total, ConfigurationHeaderLength)];
        config[..ConfigurationHeaderLength].CopyTo(output);
        output[0] = ConfigurationHeaderLength;
        // SuperSpeed counts bMaxPower in 8 mA, high speed in 2 mA, at most 500 mA.
        output[8] = (byte)Math.Min(250, config[8] * 4);
        int length = ConfigurationHeaderLength;
        int at = config[0];
        while (at + 2 <= total)
        {
            int len = config[at];
            if (len < 2 || len > total - at)
            {
                break;
            }
            ReadOnlySpan<byte> d = config.Slice(at, len);
            at += len;
            switch (d[1])
            {
                case SuperSpeedEndpointCompanionType or SuperSpeedPlusIsochCompanionType:
                    continue; // read with their endpoint
                case EndpointType when len >= 7:
                    Span<byte> e = output.AsSpan(length, len);
                    d.CopyTo(e);
                    BinaryPrimitives.WriteUInt16LittleEndian(e[4..], EndpointMaxPacket(d, config[at..total]));
                    length += len;
                    continue;
                default:
                    d.CopyTo(output.AsSpan(length));
                    length += len;
                    continue;
            }
        }
        BinaryPrimitives.WriteUInt16LittleEndian(output.AsSpan(2), (ushort)length);
        return length == output.Length ? output : output[..length];
    }

    /// <summary>An endpoint's wMaxPacketSize at high speed; <paramref name="after"/> is what follows the endpoint descriptor.</summary>
    private static ushort EndpointMaxPacket(ReadOnlySpan<byte> endpoint, ReadOnlySpan<byte> after)
    {
        int type = endpoint[3] & 3;
        int maxPacket = BinaryPrimitives.ReadUInt16LittleEndian(endpoint[4..]) & 0x7ff;
        switch (type)
        {
            case 0:
                return MaxPacketSize0;
            case 2:
                return BulkMaxPacket;
        }
        // Interrupt or isochronous: what a service interval moves, from the companion when there is one.
        int bytesPerInterval = Math.Min(maxPacket, HighSpeedMaxPacket);
        if (after.Length >= 6 && after[0] >= 6 && after[0] <= after.Length && after[1] == SuperSpeedEndpointCompanionType)
        {
            int burst = after[2] & 0x0f;
            int mult = type == 1 ? after[3] & 3 : 0;
            int declared = BinaryPrimitives.ReadUInt16LittleEndian(after[4..]);
            bytesPerInterval = declared != 0 ? declared : maxPacket * (burst + 1) * (mult + 1);
            ReadOnlySpan<byte> next = after[after[0]..];
            if (type == 1 && (after[3] & 0x80) != 0 && next.Length >= 8 && next[0] >= 8 && next[1] == SuperSpeedPlusIsochCompanionType)
            {
                bytesPerInterval = (int)Math.Min(int.MaxValue, BinaryPrimitives.ReadUInt32LittleEndian(next[4..]));
            }
        }
        if (bytesPerInterval <= HighSpeedMaxPacket)
        {
            return (ushort)bytesPerInterval;
        }
        int transactions = Math.Min(HighSpeedMaxTransactions, (bytesPerInterval + HighSpeedMaxPacket - 1) / HighSpeedMaxPacket);
        int size = Math.Min(HighSpeedMaxPacket, (bytesPerInterval + transactions - 1) / transactions);
        return (ushort)(size | ((transactions - 1) << 11));
    }

    /// <summary>
    /// Standard requests only a SuperSpeed device knows, which a high-speed device stalls: SET_SEL,
    /// SET_ISOCH_DELAY, SET_FEATURE/CLEAR_FEATURE of U1_ENABLE, U2_ENABLE, LTM_ENABLE, and of an
    /// interface's FUNCTION_SUSPEND; and GET_DESCRIPTOR of BOS or an other-speed configuration.
    /// </summary>
    public static bool IsSuperSpeedOnlyRequest(byte bmRequestType, byte bRequest, ushort wValue)
    {
        const byte ClearFeature = 1, SetFeature = 3, GetDescriptor = 6, SetSel = 48, SetIsochDelay = 49;
        return (bmRequestType, bRequest) switch
        {
            (0x00, SetSel or SetIsochDelay) => true,
            (0x00, SetFeature or ClearFeature) => wValue is 48 or 49 or 50,
            (0x01, SetFeature or ClearFeature) => wValue == 0,
            (0x80, GetDescriptor) => (wValue >> 8) is BosType or OtherSpeedConfigurationType,
            _ => false,
        };
    }
}
