using Microsoft.Extensions.Logging;

namespace XenPvUsb.Simulation;

internal static partial class Log
{
    [LoggerMessage(EventId = 900, Level = LogLevel.Error, Message = "vusb frontend dom{DomId}/{DevId}: protocol error: {Error}")]
    public static partial void FrontendProtocolError(this ILogger logger, int domId, int devId, string error);
}
