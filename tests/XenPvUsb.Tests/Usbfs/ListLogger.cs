using Microsoft.Extensions.Logging;

namespace XenPvUsb.Tests.Usbfs;

/// <summary>Collects "Level message" lines from any thread.</summary>
internal sealed class ListLogger : ILogger
{
    private readonly Lock _lock = new();
    private readonly List<string> _messages = [];

    public string[] Snapshot()
    {
        lock (_lock)
        {
            return [.. _messages];
        }
    }

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        lock (_lock)
        {
            _messages.Add($"{logLevel} {formatter(state, exception)}");
        }
    }
}
