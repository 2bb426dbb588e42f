using Microsoft.Extensions.Logging;

namespace XenPvUsb.Logging;

// EventIds 100-149: xenstore client; 150-199: simulated xenstored.
internal static partial class Log
{
    [LoggerMessage(EventId = 100, Level = LogLevel.Debug, Message = "xenstore connected via {Transport}")]
    public static partial void XsConnected(this ILogger logger, string transport);

    [LoggerMessage(EventId = 101, Level = LogLevel.Warning, Message = "xenstore connection aborted")]
    public static partial void XsAborted(this ILogger logger, Exception reason);

    [LoggerMessage(EventId = 102, Level = LogLevel.Debug, Message = "xenstore connection closed")]
    public static partial void XsClosed(this ILogger logger);

    [LoggerMessage(EventId = 103, Level = LogLevel.Trace, Message = "xenstore -> {Type} req {ReqId} tx {TxId} {Path}")]
    public static partial void XsRequest(this ILogger logger, XenStore.XsMessageType type, uint reqId, uint txId, string? path);

    [LoggerMessage(EventId = 104, Level = LogLevel.Debug, Message = "xenstore event {EventPath} for unknown watch token {Token} dropped")]
    public static partial void XsUnknownWatchToken(this ILogger logger, string eventPath, string token);

    [LoggerMessage(EventId = 105, Level = LogLevel.Debug, Message = "xenstore transaction conflict (EAGAIN), retry {Attempt}")]
    public static partial void XsTransactionRetry(this ILogger logger, int attempt);

    [LoggerMessage(EventId = 106, Level = LogLevel.Debug, Message = "xenstore transport {Path} unavailable")]
    public static partial void XsTransportUnavailable(this ILogger logger, string path, Exception reason);

    [LoggerMessage(EventId = 150, Level = LogLevel.Information, Message = "simulated xenstored listening for dom{DomId} on {SocketPath}")]
    public static partial void XsSimListening(this ILogger logger, ushort domId, string socketPath);

    [LoggerMessage(EventId = 151, Level = LogLevel.Debug, Message = "simulated xenstored: dom{DomId} connected (connection {ConnectionId})")]
    public static partial void XsSimConnected(this ILogger logger, ushort domId, int connectionId);

    [LoggerMessage(EventId = 152, Level = LogLevel.Debug, Message = "simulated xenstored: connection {ConnectionId} closed")]
    public static partial void XsSimDisconnected(this ILogger logger, int connectionId);

    [LoggerMessage(EventId = 153, Level = LogLevel.Warning, Message = "simulated xenstored: killing connection {ConnectionId}: {Reason}")]
    public static partial void XsSimKilled(this ILogger logger, int connectionId, string reason);

    [LoggerMessage(EventId = 154, Level = LogLevel.Information, Message = "simulated xenstored: dom{DomId} introduced")]
    public static partial void XsSimIntroduced(this ILogger logger, ushort domId);

    [LoggerMessage(EventId = 155, Level = LogLevel.Information, Message = "simulated xenstored: dom{DomId} released")]
    public static partial void XsSimReleased(this ILogger logger, ushort domId);

    [LoggerMessage(EventId = 156, Level = LogLevel.Trace, Message = "simulated xenstored: connection {ConnectionId} {Type} req {ReqId} tx {TxId}")]
    public static partial void XsSimRequest(this ILogger logger, int connectionId, XenStore.XsMessageType type, uint reqId, uint txId);
}
