using System.Net.Sockets;
using XenPvUsb.XenStore;

namespace XenPvUsb.Tests.XenStore;

/// <summary>Speaks raw frames to a xenstored peer, for what the real client refuses to send.</summary>
internal sealed class RawXsClient : IAsyncDisposable
{
    private readonly Socket _socket;

    private RawXsClient(Socket socket)
    {
        _socket = socket;
    }

    public static async Task<RawXsClient> ConnectAsync(string path)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        await socket.ConnectAsync(new UnixDomainSocketEndPoint(path));
        return new RawXsClient(socket);
    }

    public async Task SendAsync(XsMessageType type, uint reqId, byte[] payload, uint txId = 0) =>
        await SendRawAsync(XsCodec.EncodeMessage(type, reqId, txId, payload));

    public async Task SendRawAsync(byte[] bytes) => await _socket.SendAsync(bytes, SocketFlags.None);

    /// <summary>The next frame, or null if the peer closed the connection.</summary>
    public async Task<(XsWireHeader Header, byte[] Payload)?> ReceiveAsync()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(5));
        byte[] header = new byte[XsWireHeader.Size];
        if (!await ReceiveExactlyAsync(header, cts.Token))
        {
            return null;
        }

        XsWireHeader h = XsWireHeader.Read(header);
        byte[] payload = new byte[h.Length];
        return await ReceiveExactlyAsync(payload, cts.Token) ? (h, payload) : null;
    }

    private async Task<bool> ReceiveExactlyAsync(Memory<byte> buffer, CancellationToken cancellationToken)
    {
        while (!buffer.IsEmpty)
        {
            int n;
            try
            {
                n = await _socket.ReceiveAsync(buffer, SocketFlags.None, cancellationToken);
            }
            catch (SocketException)
            {
                return false;
            }

            if (n == 0)
            {
                return false;
            }

            buffer = buffer[n..];
        }

        return true;
    }

    public ValueTask DisposeAsync()
    {
        _socket.Dispose();
        return ValueTask.CompletedTask;
    }
}
