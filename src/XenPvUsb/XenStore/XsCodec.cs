using System.Text;

namespace XenPvUsb.XenStore;

public enum XsFrameStatus
{
    Incomplete,
    Complete,
    Oversized,
}

/// <summary>Pure xenstore framing and payload helpers (xs_wire.h, docs/misc/xenstore.txt). No I/O.</summary>
public static class XsCodec
{
    /// <summary><c>XENSTORE_PAYLOAD_MAX</c>: the largest payload in either direction.</summary>
    public const int PayloadMax = 4096;

    /// <summary><c>XENSTORE_ABS_PATH_MAX</c>.</summary>
    public const int AbsPathMax = 3072;

    /// <summary><c>XENSTORE_REL_PATH_MAX</c>.</summary>
    public const int RelPathMax = 2048;

    public static byte[] EncodeMessage(XsMessageType type, uint reqId, uint txId, ReadOnlySpan<byte> payload)
    {
        byte[] message = new byte[XsWireHeader.Size + payload.Length];
        new XsWireHeader(type, reqId, txId, (uint)payload.Length).Write(message);
        payload.CopyTo(message.AsSpan(XsWireHeader.Size));
        return message;
    }

    /// <summary>Checks whether <paramref name="buffer"/> starts with a complete frame.</summary>
    public static XsFrameStatus TryReadFrame(ReadOnlySpan<byte> buffer, int maxPayload, out XsWireHeader header, out int frameLength)
    {
        frameLength = 0;
        header = default;
        if (buffer.Length < XsWireHeader.Size)
        {
            return XsFrameStatus.Incomplete;
        }

        header = XsWireHeader.Read(buffer);
        if (header.Length > (uint)maxPayload)
        {
            return XsFrameStatus.Oversized;
        }

        int total = XsWireHeader.Size + (int)header.Length;
        if (buffer.Length < total)
        {
            return XsFrameStatus.Incomplete;
        }

        frameLength = total;
        return XsFrameStatus.Complete;
    }

    /// <summary>Each string NUL-terminated, back to back: <c>a|b|c|</c>.</summary>
    public static byte[] EncodeStrings(params ReadOnlySpan<string> parts)
    {
        int length = 0;
        foreach (string part in parts)
        {
            length += Encoding.UTF8.GetByteCount(part) + 1;
        }

        byte[] payload = new byte[length];
        int offset = 0;
        foreach (string part in parts)
        {
            offset += Encoding.UTF8.GetBytes(part, payload.AsSpan(offset));
            payload[offset++] = 0;
        }

        return payload;
    }

    /// <summary>The WRITE payload: <c>path|value</c>, the value being the rest of the payload without a NUL.</summary>
    public static byte[] EncodePathAndValue(string path, ReadOnlySpan<byte> value)
    {
        int pathLength = Encoding.UTF8.GetByteCount(path);
        byte[] payload = new byte[pathLength + 1 + value.Length];
        Encoding.UTF8.GetBytes(path, payload);
        payload[pathLength] = 0;
        value.CopyTo(payload.AsSpan(pathLength + 1));
        return payload;
    }

    /// <summary>Splits <c>a|b|c|</c> into its strings; a missing final NUL still yields the last string.</summary>
    public static List<string> DecodeStrings(ReadOnlySpan<byte> payload)
    {
        List<string> result = [];
        while (!payload.IsEmpty)
        {
            int nul = payload.IndexOf((byte)0);
            if (nul < 0)
            {
                result.Add(Encoding.UTF8.GetString(payload));
                break;
            }

            result.Add(Encoding.UTF8.GetString(payload[..nul]));
            payload = payload[(nul + 1)..];
        }

        return result;
    }

    /// <summary>A single-string payload (<c>OK|</c>, <c>ENOENT|</c>, a value), with at most one trailing NUL dropped.</summary>
    public static string DecodeString(ReadOnlySpan<byte> payload)
    {
        if (!payload.IsEmpty && payload[^1] == 0)
        {
            payload = payload[..^1];
        }

        return Encoding.UTF8.GetString(payload);
    }

    /// <summary>Splits off the first NUL-terminated string; false if there is no NUL.</summary>
    public static bool TrySplitFirst(ReadOnlySpan<byte> payload, out string first, out ReadOnlySpan<byte> rest)
    {
        int nul = payload.IndexOf((byte)0);
        if (nul < 0)
        {
            first = string.Empty;
            rest = default;
            return false;
        }

        first = Encoding.UTF8.GetString(payload[..nul]);
        rest = payload[(nul + 1)..];
        return true;
    }
}
