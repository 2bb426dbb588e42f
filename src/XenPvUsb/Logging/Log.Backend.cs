using Microsoft.Extensions.Logging;

namespace XenPvUsb.Logging;

internal static partial class Log
{
    [LoggerMessage(EventId = 100, Level = LogLevel.Critical, Message = "The event loop failed; the daemon cannot go on")]
    public static partial void EventLoopFailed(this ILogger logger, Exception exception);
}
