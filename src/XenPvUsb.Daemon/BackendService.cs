using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using XenPvUsb.Backend;
using XenPvUsb.Xen;

namespace XenPvUsb.Daemon;

/// <summary>
/// Owns the event loop and the backend registry for the daemon's lifetime. A fault of the event loop
/// is fatal: logged, the host stopped, and the process exits non-zero so systemd restarts it.
/// </summary>
internal sealed class BackendService : BackgroundService
{
    private readonly Func<EventLoop, Task<BackendHost>> _hostFactory;
    private readonly IHostApplicationLifetime _lifetime;
    private readonly ILogger _logger;
    private readonly int _busyPollMicroseconds;

    public BackendService(Func<EventLoop, Task<BackendHost>> hostFactory, IHostApplicationLifetime lifetime, ILogger<BackendService> logger,
        DaemonOptions options)
    {
        _busyPollMicroseconds = options.BusyPollMicroseconds;
        _hostFactory = hostFactory;
        _lifetime = lifetime;
        _logger = logger;
    }

    public TaskCompletionSource<BackendRegistry> Ready { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        try
        {
            await ServeAsync(stoppingToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // Cannot serve at all (no xenstore, no gntdev, ...): say why and exit non-zero for systemd.
            _logger.ServiceFailed(e);
            Environment.ExitCode = 1;
            _lifetime.StopApplication();
        }
    }

    private async Task ServeAsync(CancellationToken stoppingToken)
    {
        using var loop = new EventLoop(_logger, _busyPollMicroseconds);
        BackendHost host = await _hostFactory(loop).ConfigureAwait(false);
        var registry = new BackendRegistry(host);
        await using (registry.ConfigureAwait(false))
        {
            await registry.StartAsync(stoppingToken).ConfigureAwait(false);
            Ready.TrySetResult(registry);
            Task stopped = Task.Delay(Timeout.Infinite, stoppingToken);
            Task finished = await Task.WhenAny(stopped, loop.Completion).ConfigureAwait(false);
            if (finished == loop.Completion)
            {
                Environment.ExitCode = 70;
                _lifetime.StopApplication();
            }
        }
    }
}
