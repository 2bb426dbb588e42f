using System.Buffers.Binary;

namespace XenPvUsb.Simulation.Devices;

/// <summary>The 8-byte SETUP packet that leads a control transfer (USB 2.0 §9.3), little-endian on the wire.</summary>
public readonly record struct UsbSetupPacket(byte RequestType, byte Request, ushort Value, ushort Index, ushort Length)
{
    /// <summary>Data stage flows device-to-host.</summary>
    public bool IsIn => (RequestType & 0x80) != 0;

    /// <summary>0 standard, 1 class, 2 vendor, 3 reserved.</summary>
    public int Kind => (RequestType >> 5) & 3;

    /// <summary>0 device, 1 interface, 2 endpoint, 3 other.</summary>
    public int Recipient => RequestType & 0x1F;

    public static UsbSetupPacket Read(ReadOnlySpan<byte> source) => new(
        source[0],
        source[1],
        BinaryPrimitives.ReadUInt16LittleEndian(source[2..]),
        BinaryPrimitives.ReadUInt16LittleEndian(source[4..]),
        BinaryPrimitives.ReadUInt16LittleEndian(source[6..]));

    public void Write(Span<byte> destination)
    {
        destination[0] = RequestType;
        destination[1] = Request;
        BinaryPrimitives.WriteUInt16LittleEndian(destination[2..], Value);
        BinaryPrimitives.WriteUInt16LittleEndian(destination[4..], Index);
        BinaryPrimitives.WriteUInt16LittleEndian(destination[6..], Length);
    }
}
