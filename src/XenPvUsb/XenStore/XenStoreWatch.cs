using System.Threading.Channels;

namespace XenPvUsb.XenStore;

/// <summary>
/// A registered xenstore watch. <see cref="Events"/> yields event paths; xenstored fires a new watch once at
/// registration, so the first event is the watched path itself. Disposing sends UNWATCH and completes the channel.
/// The channel also completes when the connection dies.
/// </summary>
public sealed class XenStoreWatch : IAsyncDisposable
{
    private readonly XenStoreConnection _connection;
    private readonly Channel<string> _events = Channel.CreateUnbounded<string>(
        new UnboundedChannelOptions { SingleReader = true, SingleWriter = false });
    private int _disposed;

    internal XenStoreWatch(XenStoreConnection connection, string path, string token)
    {
        _connection = connection;
        Path = path;
        Token = token;
    }

    public string Path { get; }

    public ChannelReader<string> Events => _events.Reader;

    internal string Token { get; }

    internal void Post(string eventPath) => _events.Writer.TryWrite(eventPath);

    internal void Complete() => _events.Writer.TryComplete();

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        try
        {
            await _connection.UnwatchAsync(this).ConfigureAwait(false);
        }
        finally
        {
            Complete();
        }
    }
}
