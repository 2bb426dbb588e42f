using Microsoft.Extensions.Logging;

namespace XenPvUsb.Daemon;

internal static partial class Log
{
    [LoggerMessage(EventId = 1, Level = LogLevel.Critical, Message = "xenpvusbd cannot serve this host")]
    public static partial void ServiceFailed(this ILogger logger, Exception exception);

    [LoggerMessage(EventId = 2, Level = LogLevel.Critical, Message = "the xenstore connection died; stopping so that the service manager restarts xenpvusbd")]
    public static partial void XenStoreLost(this ILogger logger, Exception? exception);

    [LoggerMessage(EventId = 4, Level = LogLevel.Information, Message = "systemd watchdog: {Seconds} s; the event loop says it is alive at half that")]
    public static partial void WatchdogEnabled(this ILogger logger, double seconds);

    [LoggerMessage(EventId = 5, Level = LogLevel.Information, Message = "SIGUSR1: counters of {Controllers} connected controllers logged")]
    public static partial void CountersLogged(this ILogger logger, int controllers);

    [LoggerMessage(EventId = 6, Level = LogLevel.Warning, Message = "SIGUSR1: the counters could not be logged")]
    public static partial void CountersFailed(this ILogger logger, Exception exception);

    [LoggerMessage(EventId = 3, Level = LogLevel.Information, Message = "stopped: controllers left connected for the next xenpvusbd, their devices kept from dom0's drivers")]
    public static partial void ServiceStopped(this ILogger logger);
}
