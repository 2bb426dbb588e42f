using System.Net.Sockets;
using XenPvUsb.XenStore;

namespace XenPvUsb.Tests.XenStore;

/// <summary>A scripted server end: accepts one client and lets the test read requests and write arbitrary bytes.</summary>
internal sealed class FakeXenStoredPeer : IAsyncDisposable
{
    private readonly Socket _listener;
    private Socket? _peer;

    public FakeXenStoredPeer(string path)
    {
        _listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        _listener.Bind(new UnixDomainSocketEndPoint(path));
        _listener.Listen(1);
    }

    public async Task AcceptAsync() => _peer = await _listener.AcceptAsync();

    public async Task<XsWireHeader> ReceiveRequestAsync()
    {
        byte[] header = new byte[XsWireHeader.Size];
        await ReceiveExactlyAsync(header);
        XsWireHeader h = XsWireHeader.Read(header);
        await ReceiveExactlyAsync(new byte[h.Length]);
        return h;
    }

    public async Task SendAsync(byte[] bytes) => await _peer!.SendAsync(bytes, SocketFlags.None);

    public void Close() => _peer!.Shutdown(SocketShutdown.Both);

    private async Task ReceiveExactlyAsync(Memory<byte> buffer)
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(5));
        while (!buffer.IsEmpty)
        {
            int n = await _peer!.ReceiveAsync(buffer, SocketFlags.None, cts.Token);
            if (n == 0)
            {
                throw new EndOfStreamException();
            }

            buffer = buffer[n..];
        }
    }

    public ValueTask DisposeAsync()
    {
        _peer?.Dispose();
        _listener.Dispose();
        return ValueTask.CompletedTask;
    }
}
