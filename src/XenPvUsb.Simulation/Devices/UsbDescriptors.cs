using System.Buffers.Binary;
using System.Text;

namespace XenPvUsb.Simulation.Devices;

/// <summary>Builders for standard USB 2.0 descriptors (chapter 9) and USB 3's endpoint companion, used once when a device is constructed.</summary>
public static class UsbDescriptors
{
    public const byte DeviceType = 1;
    public const byte ConfigurationType = 2;
    public const byte StringType = 3;
    public const byte InterfaceType = 4;
    public const byte EndpointType = 5;
    public const byte DeviceQualifierType = 6;
    public const byte OtherSpeedConfigurationType = 7;
    public const byte SuperSpeedEndpointCompanionType = 0x30;

    /// <summary>US English, the only language the emulated devices offer.</summary>
    public const ushort LangIdEnglishUs = 0x0409;

    public static byte[] Device(
        ushort bcdUsb,
        byte deviceClass,
        byte deviceSubClass,
        byte deviceProtocol,
        byte maxPacketSize0,
        ushort vendorId,
        ushort productId,
        ushort bcdDevice,
        byte manufacturerIndex,
        byte productIndex,
        byte serialIndex,
        byte numConfigurations = 1)
    {
        byte[] d = new byte[18];
        d[0] = 18;
        d[1] = DeviceType;
        BinaryPrimitives.WriteUInt16LittleEndian(d.AsSpan(2), bcdUsb);
        d[4] = deviceClass;
        d[5] = deviceSubClass;
        d[6] = deviceProtocol;
        d[7] = maxPacketSize0;
        BinaryPrimitives.WriteUInt16LittleEndian(d.AsSpan(8), vendorId);
        BinaryPrimitives.WriteUInt16LittleEndian(d.AsSpan(10), productId);
        BinaryPrimitives.WriteUInt16LittleEndian(d.AsSpan(12), bcdDevice);
        d[14] = manufacturerIndex;
        d[15] = productIndex;
        d[16] = serialIndex;
        d[17] = numConfigurations;
        return d;
    }

    /// <summary>
    /// A configuration descriptor followed by <paramref name="body"/> (interface, class and endpoint
    /// descriptors); wTotalLength and bNumInterfaces are computed from the body.
    /// </summary>
    public static byte[] Configuration(byte configurationValue, byte configurationIndex, byte attributes, byte maxPower, params byte[][] body)
    {
        int total = 9;
        foreach (byte[] part in body)
        {
            total += part.Length;
        }

        byte[] c = new byte[total];
        c[0] = 9;
        c[1] = ConfigurationType;
        BinaryPrimitives.WriteUInt16LittleEndian(c.AsSpan(2), checked((ushort)total));
        c[5] = configurationValue;
        c[6] = configurationIndex;
        c[7] = (byte)(0x80 | attributes);
        c[8] = maxPower; // units of 2 mA, 8 mA at SuperSpeed
        int offset = 9;
        int interfaces = 0;
        foreach (byte[] part in body)
        {
            part.CopyTo(c, offset);
            offset += part.Length;
        }

        for (int i = 9; i + 1 < total && c[i] != 0; i += c[i])
        {
            if (c[i + 1] == InterfaceType && c[i + 3] == 0)
            {
                interfaces++;
            }
        }

        c[4] = (byte)interfaces;
        return c;
    }

    public static byte[] Interface(byte number, byte alternateSetting, byte numEndpoints, byte interfaceClass, byte subClass, byte protocol, byte stringIndex = 0) =>
        [9, InterfaceType, number, alternateSetting, numEndpoints, interfaceClass, subClass, protocol, stringIndex];

    /// <summary>An endpoint descriptor; <paramref name="transferType"/> is bmAttributes bits 1:0.</summary>
    public static byte[] Endpoint(byte address, UsbTransferTypeBits transferType, ushort maxPacketSize, byte interval) =>
        [7, EndpointType, address, (byte)transferType, (byte)maxPacketSize, (byte)(maxPacketSize >> 8), interval];

    /// <summary>String descriptor zero: the supported language ids.</summary>
    /// <summary>SuperSpeed endpoint companion (USB 3.2 §9.6.7): bMaxBurst is the number of packets a burst less one.</summary>
    public static byte[] SuperSpeedEndpointCompanion(byte maxBurst, byte attributes, ushort bytesPerInterval) =>
        [6, SuperSpeedEndpointCompanionType, maxBurst, attributes, (byte)bytesPerInterval, (byte)(bytesPerInterval >> 8)];

    public static byte[] LanguageTable(params ushort[] langIds)
    {
        byte[] s = new byte[2 + (2 * langIds.Length)];
        s[0] = (byte)s.Length;
        s[1] = StringType;
        for (int i = 0; i < langIds.Length; i++)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(s.AsSpan(2 + (2 * i)), langIds[i]);
        }

        return s;
    }

    /// <summary>A UTF-16LE string descriptor (at most 126 characters).</summary>
    public static byte[] String(string value)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(value.Length, 126);
        byte[] s = new byte[2 + (2 * value.Length)];
        s[0] = (byte)s.Length;
        s[1] = StringType;
        Encoding.Unicode.GetBytes(value, s.AsSpan(2));
        return s;
    }

    /// <summary>The device_qualifier descriptor of a high-speed capable device, describing the other speed.</summary>
    public static byte[] DeviceQualifier(ReadOnlySpan<byte> device, byte otherSpeedMaxPacketSize0) =>
        [10, DeviceQualifierType, device[2], device[3], device[4], device[5], device[6], otherSpeedMaxPacketSize0, device[17], 0];

    /// <summary>Decodes a UTF-16LE string descriptor.</summary>
    public static string DecodeString(ReadOnlySpan<byte> descriptor) =>
        Encoding.Unicode.GetString(descriptor[2..Math.Min(descriptor[0], descriptor.Length)]);
}
