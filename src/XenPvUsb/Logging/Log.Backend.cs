using Microsoft.Extensions.Logging;

namespace XenPvUsb.Logging;

internal static partial class Log
{
    [LoggerMessage(EventId = 100, Level = LogLevel.Critical, Message = "The event loop failed; the daemon cannot go on")]
    public static partial void EventLoopFailed(this ILogger logger, Exception exception);

    [LoggerMessage(EventId = 101, Level = LogLevel.Information, Message = "vusb {DomId}/{DevId}: connected (urb-ring-ref {UrbRef}, conn-ring-ref {ConnRef}, local port {Port})")]
    public static partial void ControllerConnected(this ILogger logger, int domId, int devId, uint urbRef, uint connRef, uint port);

    [LoggerMessage(EventId = 102, Level = LogLevel.Information, Message = "vusb {DomId}/{DevId}: disconnected")]
    public static partial void ControllerDisconnected(this ILogger logger, int domId, int devId);

    [LoggerMessage(EventId = 103, Level = LogLevel.Debug, Message = "vusb {DomId}/{DevId}: port {Port} event, speed {Speed}")]
    public static partial void PortEventSent(this ILogger logger, int domId, int devId, int port, int speed);

    [LoggerMessage(EventId = 104, Level = LogLevel.Error, Message = "vusb {DomId}/{DevId}: frontend broke the {Ring} protocol (producer index {Prod}); controller stopped")]
    public static partial void RingError(this ILogger logger, int domId, int devId, string ring, uint prod);

    [LoggerMessage(EventId = 105, Level = LogLevel.Debug, Message = "vusb {DomId}/{DevId}: request {Id} on port {Port} refused: {Reason} (status {Status})")]
    public static partial void RequestRejected(this ILogger logger, int domId, int devId, int id, int port, string reason, int status);
}
