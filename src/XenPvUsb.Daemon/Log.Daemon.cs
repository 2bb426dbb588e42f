using Microsoft.Extensions.Logging;

namespace XenPvUsb.Daemon;

internal static partial class Log
{
    [LoggerMessage(EventId = 1, Level = LogLevel.Critical, Message = "xenpvusbd cannot serve this host")]
    public static partial void ServiceFailed(this ILogger logger, Exception exception);
}
