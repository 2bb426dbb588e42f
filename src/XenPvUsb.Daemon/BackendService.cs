using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using XenPvUsb.Backend;
using XenPvUsb.Host;
using XenPvUsb.Toolstack;
using XenPvUsb.Usb.Usbfs;
using XenPvUsb.Xen;

namespace XenPvUsb.Daemon;

/// <summary>
/// Owns the event loop and the backend registry for the daemon's lifetime.
/// </summary>
/// <remarks>
/// Started means serving: the host raises ApplicationStarted (and the systemd lifetime sends READY=1 for
/// <c>Type=notify</c>) only after every hosted service's <see cref="StartAsync"/> has returned, so the registry
/// watches backend/vusb before <c>systemctl start</c> returns. A failure to start (no xenstore, no gntdev, ...)
/// fails the host's start, so systemd never sees READY=1. Later, the event loop faulting or the xenstore
/// connection dying is fatal: logged, the host stopped, and the process exits non-zero so systemd restarts it.
/// A failure of the event loop itself ends the process on the spot (exit status 70), without the graceful
/// stop: nothing could be served any more, and a successor re-adopts the controllers. Under a systemd
/// watchdog (WatchdogSec=, so WATCHDOG_USEC is set) the loop thread itself sends WATCHDOG=1 at half the
/// interval, so a loop that stops turning is killed and restarted by systemd.
/// </remarks>
internal sealed class BackendService : IHostedService
{
    private readonly Func<EventLoop, Task<BackendHost>> _hostFactory;
    private readonly IHostApplicationLifetime _lifetime;
    private readonly ILogger _logger;
    private readonly int _busyPollMicroseconds;
    private readonly SystemdNotifier? _notifier;
    private readonly DaemonOptions _options;
    private AssignmentService? _assignments;
    private EventLoop? _loop;
    private BackendRegistry? _registry;
    private BackendHost? _host;
    private Task _watchdog = Task.CompletedTask;
    private System.Runtime.InteropServices.PosixSignalRegistration? _countersSignal;
    private volatile bool _stopping;

    public BackendService(Func<EventLoop, Task<BackendHost>> hostFactory, IHostApplicationLifetime lifetime, ILogger<BackendService> logger,
        DaemonOptions options, SystemdNotifier? notifier = null)
    {
        _notifier = notifier;
        _options = options;
        _busyPollMicroseconds = options.BusyPollMicroseconds;
        _hostFactory = hostFactory;
        _lifetime = lifetime;
        _logger = logger;
    }

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        var loop = new EventLoop(_logger, LoopOptions());
        BackendHost host;
        BackendRegistry? registry = null;
        AssignmentService? assignments = null;
        try
        {
            host = await _hostFactory(loop).WaitAsync(cancellationToken).ConfigureAwait(false);
            registry = new BackendRegistry(host);
            await registry.StartAsync(cancellationToken).ConfigureAwait(false);
            if (host.Usb is UsbfsHost usbfs)
            {
                // Every assigned device present was opened by the first scan, taking over its port claim from
                // the predecessor; claims nobody took over go back to dom0's drivers.
                await usbfs.HandBackInheritedClaimsAsync().WaitAsync(cancellationToken).ConfigureAwait(false);
            }
            if (!_options.NoAssignments)
            {
                // Its first pass runs after start: readiness does not wait for attaches.
                assignments = new AssignmentService(host, new AssignmentSources
                {
                    AssignmentsPath = _options.AssignmentsPath ?? AssignmentFile.DefaultPath,
                    PolicyPath = _options.PolicyPath ?? UsbPolicy.DefaultPath,
                    SysfsRoot = host.SysfsRoot,
                    Backend = host.Self,
                });
                await assignments.StartAsync(cancellationToken).ConfigureAwait(false);
            }
        }
        catch (Exception e)
        {
            if (e is not OperationCanceledException)
            {
                _logger.ServiceFailed(e);
            }
            if (assignments is not null)
            {
                await assignments.DisposeAsync().ConfigureAwait(false);
            }
            if (registry is not null)
            {
                await registry.DisposeAsync().ConfigureAwait(false);
            }
            loop.Dispose();
            throw new ServiceStartException(e);
        }
        _loop = loop;
        _host = host;
        _registry = registry;
        _assignments = assignments;
        _watchdog = WatchAsync(loop, host);
        // SIGUSR1 (`systemctl kill -s USR1 xenpvusbd`): every connected controller's counters to the log.
        BackendRegistry served = registry;
        _countersSignal = System.Runtime.InteropServices.PosixSignalRegistration.Create(SigUsr1, context =>
        {
            context.Cancel = true;
            _ = Task.Run(async () =>
            {
                try
                {
                    int logged = await served.LogCountersAsync().ConfigureAwait(false);
                    _logger.CountersLogged(logged);
                }
                catch (Exception e)
                {
                    _logger.CountersFailed(e);
                }
            });
        });
    }

    private const System.Runtime.InteropServices.PosixSignal SigUsr1 = (System.Runtime.InteropServices.PosixSignal)10;

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        _stopping = true;
        _countersSignal?.Dispose();
        // A stopping daemon is normally restarted (upgrade, systemctl restart, a lost xenstored): guests keep
        // their controllers and dom0 keeps off their devices; the successor takes over.
        (_host?.Usb as UsbfsHost)?.KeepClaimsForRestart();
        if (_assignments is not null)
        {
            await _assignments.DisposeAsync().ConfigureAwait(false);
        }
        if (_registry is not null)
        {
            await _registry.DisposeAsync().ConfigureAwait(false);
        }
        _loop?.Dispose();
        await _watchdog.ConfigureAwait(false);
        _logger.ServiceStopped();
    }

    private EventLoopOptions LoopOptions()
    {
        TimeSpan? watchdog = SystemdNotifier.WatchdogInterval();
        SystemdNotifier? notifier = _notifier;
        if (watchdog is not null && notifier is not null)
        {
            _logger.WatchdogEnabled(watchdog.Value.TotalSeconds);
        }
        return new EventLoopOptions
        {
            BusyPollMicroseconds = _busyPollMicroseconds,
            Heartbeat = watchdog is not null && notifier is not null ? () => notifier.NotifyWatchdog() : null,
            HeartbeatInterval = watchdog is { } w ? w / 2 : TimeSpan.FromSeconds(5),
            OnFatal = FatalExit,
        };
    }

    private static void FatalExit(Exception e)
    {
        // Said on stderr synchronously (the journal gets it even if the logger's queue does not drain),
        // then out at once: no graceful stop that would need the loop.
        Console.Error.WriteLine($"xenpvusbd: the event loop failed, exiting for a restart: {e}");
        Tmds.Linux.LibC._exit(70);
    }

    private async Task WatchAsync(EventLoop loop, BackendHost host)
    {
        Task finished = await Task.WhenAny(loop.Completion, host.Store.Completion).ConfigureAwait(false);
        if (_stopping)
        {
            return;
        }
        if (finished == host.Store.Completion)
        {
            _logger.XenStoreLost(finished.Exception?.InnerException);
        }
        Environment.ExitCode = 70;
        _lifetime.StopApplication();
    }
}

/// <summary>The backend could not start serving; the cause is logged already.</summary>
internal sealed class ServiceStartException : Exception
{
    public ServiceStartException(Exception inner) : base($"xenpvusbd cannot serve this host: {inner.Message}", inner)
    {
    }
}
