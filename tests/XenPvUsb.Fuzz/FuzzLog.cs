using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace XenPvUsb.Fuzz;

/// <summary>
/// The daemon's log as the fuzzer sees it: counts per event, and every entry that carries an
/// exception (an exception from the daemon's code caused by a guest is a finding even when contained).
/// Optionally echoes warnings and above.
/// </summary>
public sealed class FuzzLog : ILoggerProvider, ILoggerFactory
{
    private readonly ConcurrentDictionary<string, long> _counts = new();
    private readonly ConcurrentQueue<string> _exceptions = new();

    public bool Echo { get; set; }

    public int ExceptionCount => _exceptions.Count;

    public IReadOnlyCollection<string> Exceptions => _exceptions;

    public IReadOnlyDictionary<string, long> Counts => _counts;

    public long Count(string eventName) => _counts.GetValueOrDefault(eventName);

    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

    public void AddProvider(ILoggerProvider provider)
    {
    }

    public void Dispose()
    {
    }

    private sealed class Logger(FuzzLog owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Information;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (logLevel < LogLevel.Information)
            {
                return;
            }
            string name = eventId.Name ?? eventId.Id.ToString(System.Globalization.CultureInfo.InvariantCulture);
            owner._counts.AddOrUpdate(name, 1, (_, n) => n + 1);
            if (exception is not null)
            {
                owner._exceptions.Enqueue($"{category} {name}: {formatter(state, exception)}: {exception}");
            }
            if (owner.Echo && logLevel >= LogLevel.Warning && !category.Contains("Simulation", StringComparison.Ordinal))
            {
                Console.Error.WriteLine($"  [{logLevel}] {name}: {formatter(state, exception)}");
            }
        }
    }
}
