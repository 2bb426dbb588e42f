using System.Net.Sockets;

namespace XenPvUsb.XenStore;

/// <summary>The xenstored unix stream socket (<c>/run/xenstored/socket</c>, §4.7) or a simulator socket.</summary>
internal sealed class XsSocketTransport : IXsTransport
{
    private readonly Socket _socket;
    private int _shutdown;

    private XsSocketTransport(Socket socket)
    {
        _socket = socket;
    }

    public int MaxPayload => XsCodec.PayloadMax;

    public static async Task<XsSocketTransport> ConnectAsync(string socketPath, CancellationToken cancellationToken)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), cancellationToken).ConfigureAwait(false);
            return new XsSocketTransport(socket);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    public ValueTask<int> ReceiveAsync(Memory<byte> buffer, CancellationToken cancellationToken) =>
        _socket.ReceiveAsync(buffer, SocketFlags.None, cancellationToken);

    public async ValueTask SendAsync(ReadOnlyMemory<byte> message, CancellationToken cancellationToken)
    {
        while (!message.IsEmpty)
        {
            int sent = await _socket.SendAsync(message, SocketFlags.None, cancellationToken).ConfigureAwait(false);
            message = message[sent..];
        }
    }

    public void Shutdown()
    {
        if (Interlocked.Exchange(ref _shutdown, 1) == 0)
        {
            try
            {
                _socket.Shutdown(SocketShutdown.Both);
            }
            catch (SocketException)
            {
            }
            catch (ObjectDisposedException)
            {
            }
        }
    }

    public ValueTask DisposeAsync()
    {
        Shutdown();
        _socket.Dispose();
        return ValueTask.CompletedTask;
    }
}
