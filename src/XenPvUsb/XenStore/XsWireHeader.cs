using System.Runtime.InteropServices;

namespace XenPvUsb.XenStore;

/// <summary>
/// The 16-byte <c>struct xsd_sockmsg</c> header: type, req_id, tx_id, len, each a u32 in host byte order
/// (xs_wire.h). <see cref="Length"/> is the payload length that follows the header.
/// </summary>
public readonly record struct XsWireHeader(XsMessageType Type, uint ReqId, uint TxId, uint Length)
{
    public const int Size = 16;

    public static XsWireHeader Read(ReadOnlySpan<byte> source)
    {
        if (source.Length < Size)
        {
            throw new ArgumentException("A xenstore header is 16 bytes.", nameof(source));
        }

        return new XsWireHeader(
            (XsMessageType)MemoryMarshal.Read<uint>(source),
            MemoryMarshal.Read<uint>(source[4..]),
            MemoryMarshal.Read<uint>(source[8..]),
            MemoryMarshal.Read<uint>(source[12..]));
    }

    public void Write(Span<byte> destination)
    {
        if (destination.Length < Size)
        {
            throw new ArgumentException("A xenstore header is 16 bytes.", nameof(destination));
        }

        uint type = (uint)Type;
        uint reqId = ReqId;
        uint txId = TxId;
        uint length = Length;
        MemoryMarshal.Write(destination, in type);
        MemoryMarshal.Write(destination[4..], in reqId);
        MemoryMarshal.Write(destination[8..], in txId);
        MemoryMarshal.Write(destination[12..], in length);
    }
}
