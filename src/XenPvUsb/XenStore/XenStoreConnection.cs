using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using XenPvUsb.Logging;

namespace XenPvUsb.XenStore;

/// <summary>
/// A connection to xenstored, in the manner of libxenstore's xs.c: one receive loop demultiplexes replies by
/// req_id to the pending calls and routes WATCH_EVENTs by token to their <see cref="XenStoreWatch"/>.
/// A framing error, a reply to no pending request or a reply of the wrong type means client and daemon are out
/// of sync, so the connection is dropped (xs.c does the same) and everything pending fails with
/// <see cref="XenStoreConnectionClosedException"/>.
/// </summary>
/// <remarks>
/// Lock discipline: <c>_gate</c> guards <c>_pending</c>, <c>_watches</c>, <c>_nextReqId</c> and <c>_aborted</c>; it is
/// never held across an await or a transport call. <c>_writeLock</c> serialises whole messages onto the transport;
/// <c>_gate</c> may be taken while holding it, never the other way round.
/// </remarks>
public sealed partial class XenStoreConnection : IAsyncDisposable
{
    private readonly IXsTransport _transport;
    private readonly ILogger _logger;
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly Lock _gate = new();
    private readonly Dictionary<uint, PendingCall> _pending = [];
    private readonly Dictionary<string, XenStoreWatch> _watches = new(StringComparer.Ordinal);
    private readonly TaskCompletionSource _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Task _receiveLoop = Task.CompletedTask;
    private uint _nextReqId;
    private bool _aborted;
    private Exception? _abortReason;
    private int _disposed;

    private XenStoreConnection(IXsTransport transport, ILogger? logger)
    {
        _transport = transport;
        _logger = logger ?? NullLogger.Instance;
    }

    /// <summary>Completes when the connection is disposed, or faults with the reason it died.</summary>
    public Task Completion => _completion.Task;

    /// <summary>The largest request payload the transport accepts; larger requests fail locally with E2BIG.</summary>
    public int MaxPayload => _transport.MaxPayload;

    public static async Task<XenStoreConnection> ConnectAsync(string socketPath, ILogger? logger = null, CancellationToken cancellationToken = default)
    {
        XsSocketTransport transport = await XsSocketTransport.ConnectAsync(socketPath, cancellationToken).ConfigureAwait(false);
        return Create(transport, logger, socketPath);
    }

    /// <summary>
    /// Connects the way libxenstore's <c>xs_open</c> does on dom0: <c>$XENSTORED_PATH</c> if set, else the xenstored
    /// socket (<c>/run/xenstored/socket</c>, <c>/var/run/xenstored/socket</c>), else the kernel device
    /// <c>/dev/xen/xenbus</c> (<c>/proc/xen/xenbus</c>). A path is used as a socket if it is one (S_ISSOCK).
    /// </summary>
    public static async Task<XenStoreConnection> OpenDefaultAsync(ILogger? logger = null, CancellationToken cancellationToken = default)
    {
        string? configured = Environment.GetEnvironmentVariable("XENSTORED_PATH");
        string[] candidates = string.IsNullOrEmpty(configured)
            ? ["/run/xenstored/socket", "/var/run/xenstored/socket", "/dev/xen/xenbus", "/proc/xen/xenbus"]
            : [configured];

        Exception? lastError = null;
        foreach (string path in candidates)
        {
            bool? isSocket = XsTransportProbe.IsSocket(path);
            if (isSocket is null)
            {
                continue;
            }

            try
            {
                IXsTransport transport = isSocket.Value
                    ? await XsSocketTransport.ConnectAsync(path, cancellationToken).ConfigureAwait(false)
                    : XsXenbusTransport.Open(path);
                return Create(transport, logger, path);
            }
            catch (Exception ex) when (ex is IOException or System.Net.Sockets.SocketException or UnauthorizedAccessException)
            {
                (logger ?? NullLogger.Instance).XsTransportUnavailable(path, ex);
                lastError = ex;
            }
        }

        throw new XenStoreConnectionClosedException(
            $"No xenstore transport available (tried {string.Join(", ", candidates)}).", lastError);
    }

    internal static XenStoreConnection Create(IXsTransport transport, ILogger? logger, string description)
    {
        var connection = new XenStoreConnection(transport, logger);
        connection._receiveLoop = connection.ReceiveLoopAsync();
        connection._logger.XsConnected(description);
        return connection;
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        Abort(null);
        await _receiveLoop.ConfigureAwait(false);
        await _transport.DisposeAsync().ConfigureAwait(false);
    }

    /// <summary>Sends one request and returns the reply payload; an ERROR reply becomes a <see cref="XenStoreException"/>.</summary>
    private async Task<byte[]> RequestAsync(XsMessageType type, uint txId, byte[] payload, string? path, CancellationToken cancellationToken)
    {
        if (payload.Length > _transport.MaxPayload)
        {
            throw new XenStoreException(OperationName(type), "E2BIG", path);
        }

        cancellationToken.ThrowIfCancellationRequested();
        var call = new PendingCall(type);
        uint reqId;
        lock (_gate)
        {
            if (_aborted)
            {
                throw CreateClosedException();
            }

            do
            {
                reqId = unchecked(++_nextReqId);
            }
            while (_pending.ContainsKey(reqId));
            _pending.Add(reqId, call);
        }

        _logger.XsRequest(type, reqId, txId, path);
        byte[] message = XsCodec.EncodeMessage(type, reqId, txId, payload);
        try
        {
            await _writeLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // Not sent, so no reply will come for this req_id.
            lock (_gate)
            {
                _pending.Remove(reqId);
            }

            throw;
        }

        try
        {
            // Never cancel a write half-way: a torn message would desynchronise the stream.
            await _transport.SendAsync(message, CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            Abort(ex);
        }
        finally
        {
            _writeLock.Release();
        }

        // A cancelled wait leaves the call pending: its reply still arrives and must find its req_id.
        (XsMessageType replyType, byte[] replyPayload) = await call.Reply.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        if (replyType == XsMessageType.Error)
        {
            throw new XenStoreException(OperationName(type), XsCodec.DecodeString(replyPayload), path);
        }

        return replyPayload;
    }

    private async Task ReceiveLoopAsync()
    {
        await Task.Yield();
        byte[] buffer = new byte[2 * (XsWireHeader.Size + XsCodec.PayloadMax)];
        int start = 0;
        int end = 0;
        try
        {
            while (true)
            {
                while (true)
                {
                    XsFrameStatus status = XsCodec.TryReadFrame(
                        buffer.AsSpan(start, end - start), XsCodec.PayloadMax, out XsWireHeader header, out int frameLength);
                    if (status == XsFrameStatus.Incomplete)
                    {
                        break;
                    }

                    if (status == XsFrameStatus.Oversized)
                    {
                        throw new InvalidDataException($"xenstore frame of type {header.Type} announces a {header.Length}-byte payload.");
                    }

                    Dispatch(header, buffer.AsSpan(start + XsWireHeader.Size, (int)header.Length));
                    start += frameLength;
                }

                if (start > 0)
                {
                    Buffer.BlockCopy(buffer, start, buffer, 0, end - start);
                    end -= start;
                    start = 0;
                }

                int received = await _transport.ReceiveAsync(buffer.AsMemory(end), CancellationToken.None).ConfigureAwait(false);
                if (received == 0)
                {
                    Abort(end == 0
                        ? new XenStoreConnectionClosedException("xenstored closed the connection.")
                        : new InvalidDataException("xenstored closed the connection in the middle of a message."));
                    return;
                }

                end += received;
            }
        }
        catch (Exception ex)
        {
            Abort(ex);
        }
    }

    private void Dispatch(XsWireHeader header, ReadOnlySpan<byte> payload)
    {
        if (header.Type == XsMessageType.WatchEvent)
        {
            // The kernel device does not initialise req_id/tx_id of events (§3.3): route by token only.
            List<string> parts = XsCodec.DecodeStrings(payload);
            if (parts.Count < 2)
            {
                throw new InvalidDataException("Malformed xenstore WATCH_EVENT.");
            }

            XenStoreWatch? watch;
            lock (_gate)
            {
                _watches.TryGetValue(parts[1], out watch);
            }

            if (watch is null)
            {
                LogUnknownToken(parts[0], parts[1]);
            }
            else
            {
                watch.Post(parts[0]);
            }

            return;
        }

        PendingCall? call;
        lock (_gate)
        {
            // A bad reply leaves the call pending, so the Abort that follows fails it with the rest.
            if (!_pending.TryGetValue(header.ReqId, out call))
            {
                throw new InvalidDataException($"xenstore reply {header.Type} for unknown req_id {header.ReqId}.");
            }

            if (header.Type != call.Type && header.Type != XsMessageType.Error)
            {
                throw new InvalidDataException($"xenstore reply of type {header.Type} to a {call.Type} request.");
            }

            _pending.Remove(header.ReqId);
        }

        call.Reply.TrySetResult((header.Type, payload.ToArray()));
    }

    /// <summary>
    /// The one way the connection dies. Idempotent; keeps the first reason. A null reason is an orderly close.
    /// </summary>
    private void Abort(Exception? reason)
    {
        PendingCall[] calls;
        XenStoreWatch[] watches;
        lock (_gate)
        {
            if (_aborted)
            {
                return;
            }

            _aborted = true;
            _abortReason = reason;
            calls = [.. _pending.Values];
            _pending.Clear();
            watches = [.. _watches.Values];
            _watches.Clear();
        }

        try
        {
            if (reason is null)
            {
                _logger.XsClosed();
            }
            else
            {
                _logger.XsAborted(reason);
            }

            _transport.Shutdown();
        }
        finally
        {
            XenStoreConnectionClosedException closed = CreateClosedException();
            foreach (PendingCall call in calls)
            {
                call.Reply.TrySetException(closed);
            }

            foreach (XenStoreWatch watch in watches)
            {
                watch.Complete();
            }

            if (reason is null)
            {
                _completion.TrySetResult();
            }
            else
            {
                _completion.TrySetException(reason);
            }
        }
    }

    private XenStoreConnectionClosedException CreateClosedException()
    {
        Exception? reason = _abortReason;
        return reason switch
        {
            null => new XenStoreConnectionClosedException("The xenstore connection is closed."),
            XenStoreConnectionClosedException closed => new XenStoreConnectionClosedException(closed.Message, closed),
            _ => new XenStoreConnectionClosedException($"The xenstore connection died: {reason.Message}", reason),
        };
    }

    private static string OperationName(XsMessageType type) => type switch
    {
        XsMessageType.Directory => "DIRECTORY",
        XsMessageType.Read => "READ",
        XsMessageType.GetPerms => "GET_PERMS",
        XsMessageType.Watch => "WATCH",
        XsMessageType.Unwatch => "UNWATCH",
        XsMessageType.TransactionStart => "TRANSACTION_START",
        XsMessageType.TransactionEnd => "TRANSACTION_END",
        XsMessageType.GetDomainPath => "GET_DOMAIN_PATH",
        XsMessageType.Write => "WRITE",
        XsMessageType.Mkdir => "MKDIR",
        XsMessageType.Rm => "RM",
        XsMessageType.SetPerms => "SET_PERMS",
        XsMessageType.IsDomainIntroduced => "IS_DOMAIN_INTRODUCED",
        XsMessageType.ResetWatches => "RESET_WATCHES",
        _ => type.ToString().ToUpperInvariant(),
    };

    private sealed class PendingCall(XsMessageType type)
    {
        public XsMessageType Type { get; } = type;

        public TaskCompletionSource<(XsMessageType Type, byte[] Payload)> Reply { get; } =
            new(TaskCreationOptions.RunContinuationsAsynchronously);
    }
}
