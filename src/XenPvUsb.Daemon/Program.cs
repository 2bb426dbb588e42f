using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using XenPvUsb.Backend;
using XenPvUsb.Host;
using XenPvUsb.Logging;
using XenPvUsb.Simulation.Host;
using XenPvUsb.Xen;
using XenPvUsb.XenStore;

namespace XenPvUsb.Daemon;

internal static class Program
{
    private static async Task<int> Main(string[] args)
    {
        DaemonOptions options;
        try
        {
            options = DaemonOptions.Parse(args);
        }
        catch (UsageException e)
        {
            if (e.Message.Length > 0 && e.Message != new UsageException().Message)
            {
                Console.Error.WriteLine($"xenpvusbd: {e.Message}");
            }
            Console.Error.WriteLine(DaemonOptions.Usage);
            return e.Message == new UsageException().Message ? 0 : 1;
        }

        if (options.Demo)
        {
            return await Demo.RunAsync(options).ConfigureAwait(false);
        }
        if (!options.Simulate)
        {
            if (!Dom0.IsControlDomain())
            {
                Console.Error.WriteLine("xenpvusbd: this is not a Xen dom0 (no control_d in /proc/xen/capabilities); use --simulate for the built-in simulated host");
                return 1;
            }
            return await RunOnDom0Async(options).ConfigureAwait(false);
        }
        return await RunSimulatedAsync(options).ConfigureAwait(false);
    }

    /// <summary>Real mode: xenstored (socket or /dev/xen/xenbus), gntdev and evtchn through the shim, usbfs.</summary>
    private static async Task<int> RunOnDom0Async(DaemonOptions options)
    {
        XenPvUsb.Interop.Libraries.UseShimBesideExecutable();
        // Before anything can start a child process: the fds systemd kept for us (port claims of the
        // predecessor) are taken and made close-on-exec, and $LISTEN_FDS is cleared.
        SystemdNotifier? notifier = SystemdNotifier.FromEnvironment();
        IFdStore fdStore = SystemdFdStore.FromEnvironment(notifier);
        HostApplicationBuilder builder = CreateHostBuilder();
        builder.Services.AddSystemd();
        if (notifier is not null)
        {
            builder.Services.AddSingleton(notifier);
        }
        builder.Logging.SetMinimumLevel(options.Verbose ? LogLevel.Debug : LogLevel.Information);
        var owned = new List<IAsyncDisposable>();
        var disposables = new List<IDisposable>();
        builder.Services.AddSingleton<Func<EventLoop, IReadOnlyList<EventLoop>, Task<BackendHost>>>(sp => async (loop, loops) =>
        {
            ILoggerFactory lf = sp.GetRequiredService<ILoggerFactory>();
            XenStoreConnection store = await XenStoreConnection.OpenDefaultAsync(lf.CreateLogger("XenPvUsb.XenStore")).ConfigureAwait(false);
            owned.Add(store);
            var grants = new XenGrantTable();
            disposables.Add(grants);
            var usb = new XenPvUsb.Usb.Usbfs.UsbfsHost(loop, logger: lf.CreateLogger("XenPvUsb.Usb"), fdStore: fdStore);
            disposables.Add(usb);
            var audit = new AuditTrail(lf.CreateLogger("XenPvUsb.Audit"));
            disposables.Add(audit);
            return new BackendHost(store, grants, new XenEventChannels(), usb, loop, lf, DomId.Dom0)
            {
                Audit = audit,
                GrantMode = options.GrantMode,
                StateDirectory = options.StateDirectory ?? DefaultStateDirectory(),
                UsbfsBudget = options.UsbfsBudget ?? DefaultUsbfsBudget(),
                ControllerLoops = loops,
            };
        });
        builder.Services.AddSingleton(options);
        builder.Services.AddHostedService<BackendService>();
        try
        {
            using IHost app = builder.Build();
            await app.RunAsync().ConfigureAwait(false);
        }
        catch (ServiceStartException e)
        {
            // The cause is in the log already; a failed start never sent READY=1.
            Console.Error.WriteLine($"xenpvusbd: cannot serve this dom0: {e.InnerException?.Message}");
            return 1;
        }
        finally
        {
            foreach (IDisposable d in disposables)
            {
                d.Dispose();
            }
            foreach (IAsyncDisposable d in owned)
            {
                await d.DisposeAsync().ConfigureAwait(false);
            }
        }
        return Environment.ExitCode;
    }

    /// <summary>1/16 of usbcore's usbfs_memory_mb (0 there means no kernel limit: then the built-in 1 MiB), at least 256 KiB.</summary>
    private static long DefaultUsbfsBudget()
    {
        try
        {
            string text = File.ReadAllText("/sys/module/usbcore/parameters/usbfs_memory_mb").Trim();
            if (long.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long mb) && mb > 0)
            {
                return Math.Max(256 * 1024, mb * 1024 * 1024 / 16);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
        return VusbController.DefaultUsbfsBudget;
    }

    /// <summary>systemd's RuntimeDirectory= (xenpvusb, preserved across restarts), else /run/xenpvusb.</summary>
    private static string DefaultStateDirectory()
    {
        string? runtime = Environment.GetEnvironmentVariable("RUNTIME_DIRECTORY");
        return string.IsNullOrEmpty(runtime) ? "/run/xenpvusb" : runtime.Split(':')[0];
    }

    /// <summary>
    /// The generic host's defaults, but no watching of the content root for configuration changes: under
    /// systemd the working directory is "/", and the reload watcher would put an inotify watch on every
    /// directory below it (40 s of start-up in the lab's dom0, and work on every file change after that).
    /// </summary>
    private static HostApplicationBuilder CreateHostBuilder()
    {
        var settings = new HostApplicationBuilderSettings
        {
            ContentRootPath = AppContext.BaseDirectory,
            Configuration = new ConfigurationManager(),
        };
        settings.Configuration["hostBuilder:reloadConfigOnChange"] = "false";
        return Microsoft.Extensions.Hosting.Host.CreateApplicationBuilder(settings);
    }

    private static async Task<int> RunSimulatedAsync(DaemonOptions options)
    {
        string runDir = options.RunDirectory ?? Path.Combine(Path.GetTempPath(), "xenpvusb-sim");
        HostApplicationBuilder builder = CreateHostBuilder();
        builder.Services.AddSystemd();
        builder.Logging.SetMinimumLevel(options.Verbose ? LogLevel.Debug : LogLevel.Information);
        using ILoggerFactory bootLogging = LoggerFactory.Create(b => b.AddSimpleConsole());
        await using SimulatedXenHost sim = await SimulatedXenHost.StartAsync(runDir, bootLogging).ConfigureAwait(false);
        Devices.PlugDemoDevices(sim, Path.Combine(runDir, "stick.img"), options.Image);
        SimulatedGuest guest = await sim.CreateGuestAsync("guest1").ConfigureAwait(false);
        await guest.StartAutoProbeAsync().ConfigureAwait(false);
        Console.Error.WriteLine($"xenpvusbd: simulated Xen host ready; guest 'guest1' is domain {guest.Id}. Try:");
        Console.Error.WriteLine($"  XENSTORED_PATH={sim.Dom0SocketPath} XENPVUSB_SYSFS={sim.SysfsRoot} xenpvusb usb-list-assignable-devices");

        XenStoreConnection? store = null;
        builder.Services.AddSingleton<Func<EventLoop, IReadOnlyList<EventLoop>, Task<BackendHost>>>(sp => async (loop, loops) =>
        {
            store = await XenStoreConnection.ConnectAsync(sim.Dom0SocketPath).ConfigureAwait(false);
            BackendHost host = sim.CreateBackendHost(store, loop, sp.GetRequiredService<ILoggerFactory>());
            host.GrantMode = options.GrantMode;
            host.SysfsRoot = sim.SysfsRoot;
            host.StateDirectory = options.StateDirectory ?? Path.Combine(runDir, "state");
            host.ControllerLoops = loops;
            return host;
        });
        builder.Services.AddSingleton(options);
        builder.Services.AddHostedService<BackendService>();
        try
        {
            using IHost app = builder.Build();
            await app.RunAsync().ConfigureAwait(false);
        }
        catch (ServiceStartException e)
        {
            Console.Error.WriteLine($"xenpvusbd: cannot serve the simulated host: {e.InnerException?.Message}");
            return 1;
        }
        if (store is not null)
        {
            await store.DisposeAsync().ConfigureAwait(false);
        }
        return Environment.ExitCode;
    }
}
