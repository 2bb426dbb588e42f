using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using XenPvUsb.Logging;
using XenPvUsb.Xen;
using XenPvUsb.XenStore;

namespace XenPvUsb.Simulation.XenStore;

/// <summary>
/// An in-process xenstored speaking the real wire protocol (host-interfaces.md §4) on unix sockets. A socket
/// listened for dom0 behaves like xenstored's own socket (privileged); a socket listened for a guest behaves like
/// that guest's ring connection (unprivileged, permission-checked, relative paths under /local/domain/&lt;id&gt;).
/// </summary>
/// <remarks>
/// One lock (<c>_lock</c>) guards the tree, every connection's watches and transactions, the connection list and
/// the introduced set. Each request is handled entirely under it; replies and events are only queued there.
/// </remarks>
public sealed partial class SimulatedXenStored : IAsyncDisposable
{
    private readonly ILogger _logger;
    private readonly Lock _lock = new();
    private readonly SimStore _store = new();
    private readonly List<SimConnection> _connections = [];
    private readonly HashSet<DomId> _introduced = [DomId.Dom0];
    private readonly List<Listener> _listeners = [];
    private readonly List<Task> _tasks = [];
    private int _nextConnectionId;
    private uint _nextTransactionId;
    private bool _disposed;
    private SimWatch? _pendingRegistrationEvent; // set by WATCH, sent after its OK

    public SimulatedXenStored(ILogger? logger = null)
    {
        _logger = logger ?? NullLogger.Instance;
        _store.Changed = FireWatches;
        foreach (string path in (string[])["/local", "/local/domain", "/local/domain/0"])
        {
            _store.Mkdir(new SimCaller(DomId.Dom0), path);
        }
    }

    public int ConnectionCount
    {
        get
        {
            lock (_lock)
            {
                return _connections.Count;
            }
        }
    }

    /// <summary>Listens on <paramref name="socketPath"/>; its connections act as <paramref name="domain"/>. Removes a stale socket file first.</summary>
    public void Listen(DomId domain, string socketPath)
    {
        if (File.Exists(socketPath))
        {
            File.Delete(socketPath);
        }

        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            socket.Bind(new UnixDomainSocketEndPoint(socketPath));
            socket.Listen(16);
        }
        catch
        {
            socket.Dispose();
            throw;
        }

        var listener = new Listener(domain, socketPath, socket);
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _listeners.Add(listener);
            _tasks.Add(AcceptLoopAsync(listener));
        }

        _logger.XsSimListening(domain.Value, socketPath);
    }

    /// <summary>What xenstored does on XS_INTRODUCE: the domain becomes known and <c>@introduceDomain</c> fires.</summary>
    public void IntroduceDomain(DomId domain)
    {
        lock (_lock)
        {
            IntroduceLocked(domain);
        }
    }

    /// <summary>Domain death: <c>@releaseDomain</c> fires, the domain is forgotten and its guest connections are dropped.</summary>
    public void ReleaseDomain(DomId domain)
    {
        lock (_lock)
        {
            ReleaseLocked(domain);
        }
    }

    private void IntroduceLocked(DomId domain)
    {
        _introduced.Add(domain);
        _logger.XsSimIntroduced(domain.Value);
        FireSpecial(XenStorePath.IntroduceDomain);
    }

    private void ReleaseLocked(DomId domain)
    {
        _introduced.Remove(domain);
        _logger.XsSimReleased(domain.Value);
        FireSpecial(XenStorePath.ReleaseDomain);
        if (domain != DomId.Dom0)
        {
            foreach (SimConnection connection in _connections)
            {
                if (connection.Caller.Domain == domain)
                {
                    connection.Kill();
                }
            }
        }
    }

    private async Task AcceptLoopAsync(Listener listener)
    {
        await Task.Yield();
        while (true)
        {
            Socket socket;
            try
            {
                socket = await listener.Socket.AcceptAsync().ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
            {
                return;
            }

            lock (_lock)
            {
                if (_disposed)
                {
                    socket.Dispose();
                    return;
                }

                var connection = new SimConnection(++_nextConnectionId, listener.Domain, socket);
                _connections.Add(connection);
                _tasks.Add(RunConnectionAsync(connection));
                _logger.XsSimConnected(listener.Domain.Value, connection.Id);
            }
        }
    }

    private async Task RunConnectionAsync(SimConnection connection)
    {
        await Task.Yield();
        Task sendLoop = SendLoopAsync(connection);
        try
        {
            await ReceiveLoopAsync(connection).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException or IOException)
        {
            // Peer went away.
        }
        finally
        {
            lock (_lock)
            {
                // A connection's watches and open transactions die with it.
                _connections.Remove(connection);
            }

            connection.Kill();
            await sendLoop.ConfigureAwait(false);
            connection.Socket.Dispose();
            _logger.XsSimDisconnected(connection.Id);
        }
    }

    private async Task ReceiveLoopAsync(SimConnection connection)
    {
        byte[] header = new byte[XsWireHeader.Size];
        while (true)
        {
            if (!await ReceiveExactlyAsync(connection.Socket, header).ConfigureAwait(false))
            {
                return;
            }

            XsWireHeader h = XsWireHeader.Read(header);
            if (h.Length > XsCodec.PayloadMax)
            {
                // xenstored drops a client that exceeds XENSTORE_PAYLOAD_MAX.
                _logger.XsSimKilled(connection.Id, $"payload of {h.Length} bytes");
                return;
            }

            byte[] payload = new byte[h.Length];
            if (!await ReceiveExactlyAsync(connection.Socket, payload).ConfigureAwait(false))
            {
                return;
            }

            _logger.XsSimRequest(connection.Id, h.Type, h.ReqId, h.TxId);
            lock (_lock)
            {
                HandleRequest(connection, h, payload);
            }
        }
    }

    private static async Task<bool> ReceiveExactlyAsync(Socket socket, Memory<byte> buffer)
    {
        while (!buffer.IsEmpty)
        {
            int n = await socket.ReceiveAsync(buffer, SocketFlags.None).ConfigureAwait(false);
            if (n == 0)
            {
                return false;
            }

            buffer = buffer[n..];
        }

        return true;
    }

    private static async Task SendLoopAsync(SimConnection connection)
    {
        try
        {
            await foreach (byte[] message in connection.Outgoing.ReadAllAsync().ConfigureAwait(false))
            {
                ReadOnlyMemory<byte> remaining = message;
                while (!remaining.IsEmpty)
                {
                    int sent = await connection.Socket.SendAsync(remaining, SocketFlags.None).ConfigureAwait(false);
                    remaining = remaining[sent..];
                }
            }
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            connection.Kill();
        }
    }

    public async ValueTask DisposeAsync()
    {
        Task[] tasks;
        Listener[] listeners;
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            listeners = [.. _listeners];
            foreach (SimConnection connection in _connections)
            {
                connection.Kill();
            }
        }

        foreach (Listener listener in listeners)
        {
            listener.Socket.Dispose();
        }

        lock (_lock)
        {
            tasks = [.. _tasks];
        }

        await Task.WhenAll(tasks).ConfigureAwait(false);
        foreach (Listener listener in listeners)
        {
            try
            {
                File.Delete(listener.Path);
            }
            catch (IOException)
            {
            }
        }
    }

    private sealed record Listener(DomId Domain, string Path, Socket Socket);
}
