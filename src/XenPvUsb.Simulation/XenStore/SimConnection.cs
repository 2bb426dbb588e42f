using System.Net.Sockets;
using System.Threading.Channels;
using XenPvUsb.Xen;

namespace XenPvUsb.Simulation.XenStore;

/// <summary>
/// One client connection. Replies and watch events are queued (under the server lock, so they keep their order)
/// and written by a send loop, so nothing blocks while the tree lock is held.
/// </summary>
internal sealed class SimConnection
{
    private readonly Channel<byte[]> _outgoing = Channel.CreateUnbounded<byte[]>(
        new UnboundedChannelOptions { SingleReader = true, SingleWriter = false });
    private int _killed;

    public SimConnection(int id, DomId domain, Socket socket)
    {
        Id = id;
        Caller = new SimCaller(domain);
        Socket = socket;
    }

    public int Id { get; }

    public SimCaller Caller { get; }

    public Socket Socket { get; }

    /// <summary>Where relative paths resolve: <c>/local/domain/&lt;domid&gt;</c>.</summary>
    public string DomainPath => "/local/domain/" + Caller.Domain.ToString();

    // Guarded by the server lock.
    public List<SimWatch> Watches { get; } = [];

    // Guarded by the server lock.
    public Dictionary<uint, SimTransaction> Transactions { get; } = [];

    public ChannelReader<byte[]> Outgoing => _outgoing.Reader;

    public void Enqueue(byte[] message) => _outgoing.Writer.TryWrite(message);

    /// <summary>Drops the connection: pending output is discarded, the socket is shut down so both loops end.</summary>
    public void Kill()
    {
        if (Interlocked.Exchange(ref _killed, 1) != 0)
        {
            return;
        }

        _outgoing.Writer.TryComplete();
        try
        {
            Socket.Shutdown(SocketShutdown.Both);
        }
        catch (SocketException)
        {
        }
        catch (ObjectDisposedException)
        {
        }
    }

    public void CompleteOutput() => _outgoing.Writer.TryComplete();
}
