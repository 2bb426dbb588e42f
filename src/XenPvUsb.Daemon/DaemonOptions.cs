using XenPvUsb.Backend;
using XenPvUsb.Xen;

namespace XenPvUsb.Daemon;

/// <summary>Command line of xenpvusbd.</summary>
internal sealed record DaemonOptions(bool Simulate, bool Demo, string? RunDirectory, string? Image, string? Cli, bool Verbose)
{
    /// <summary>Data path of controllers whose backend has no grant-mode node.</summary>
    public GrantMode GrantMode { get; init; } = GrantMode.Copy;

    /// <summary>Per-controller cap on usbfs memory in flight, in bytes (null: 1/16 of usbcore's usbfs_memory_mb, at least 256 KiB).</summary>
    public long? UsbfsBudget { get; init; }

    /// <summary>Where controllers keep their recovery journals (null: $RUNTIME_DIRECTORY or /run/xenpvusb).</summary>
    public string? StateDirectory { get; init; }

    /// <summary>How long the event loop keeps polling a busy ring (microseconds; 0: never).</summary>
    public int BusyPollMicroseconds { get; init; } = EventLoop.DefaultBusyPollMicroseconds;

    /// <summary>The persistent assignments file (null: /etc/xenpvusb/assignments.conf).</summary>
    public string? AssignmentsPath { get; init; }

    /// <summary>The USB policy file (null: /etc/xenpvusb/usb-policy.conf).</summary>
    public string? PolicyPath { get; init; }

    /// <summary>Serve only: apply no persistent assignments.</summary>
    public bool NoAssignments { get; init; }

    /// <summary>Event loops controllers are sharded over; null: one per CPU (at most <see cref="MaxLoops"/>).</summary>
    public int? Loops { get; init; }

    public const int MaxLoops = 64;

    /// <summary>The loops to run: <see cref="Loops"/>, or one per CPU this process may use, at most 8 by default.</summary>
    public int EffectiveLoops => Loops ?? Math.Clamp(Environment.ProcessorCount, 1, 8);

    public static DaemonOptions Parse(string[] args)
    {
        bool simulate = false, demo = false, verbose = false;
        string? runDir = null, image = null, cli = null, stateDir = null, assignments = null, policy = null;
        bool noAssignments = false;
        long? usbfsBudget = null;
        GrantMode grantMode = GrantMode.Copy;
        int busyPoll = EventLoop.DefaultBusyPollMicroseconds;
        int? loops = null;
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--simulate":
                    simulate = true;
                    break;
                case "--demo":
                    demo = true;
                    simulate = true;
                    break;
                case "-v" or "--verbose":
                    verbose = true;
                    break;
                case "--run-dir" when i + 1 < args.Length:
                    runDir = args[++i];
                    break;
                case "--usbfs-budget" when i + 1 < args.Length:
                    if (!long.TryParse(args[++i], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long kib)
                        || kib is < 64 or > 1024 * 1024)
                    {
                        throw new UsageException($"--usbfs-budget takes KiB from 64 to 1048576, not '{args[i]}'");
                    }
                    usbfsBudget = kib * 1024;
                    break;
                case "--state-dir" when i + 1 < args.Length:
                    stateDir = args[++i];
                    break;
                case "--assignments" when i + 1 < args.Length:
                    assignments = args[++i];
                    break;
                case "--policy" when i + 1 < args.Length:
                    policy = args[++i];
                    break;
                case "--no-assignments":
                    noAssignments = true;
                    break;
                case "--image" when i + 1 < args.Length:
                    image = args[++i];
                    break;
                case "--cli" when i + 1 < args.Length:
                    cli = args[++i];
                    break;
                case "--grant-mode" when i + 1 < args.Length:
                    if (!GrantModes.TryParse(args[++i], out grantMode))
                    {
                        throw new UsageException($"--grant-mode must be copy or map, not '{args[i]}'");
                    }
                    break;
                case "--busy-poll" when i + 1 < args.Length:
                    if (!int.TryParse(args[++i], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out busyPoll)
                        || busyPoll > 1_000_000)
                    {
                        throw new UsageException($"--busy-poll takes microseconds from 0 to 1000000, not '{args[i]}'");
                    }
                    break;
                case "--loops" when i + 1 < args.Length:
                    if (!int.TryParse(args[++i], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int n)
                        || n is < 1 or > MaxLoops)
                    {
                        throw new UsageException($"--loops takes a count from 1 to {MaxLoops}, not '{args[i]}'");
                    }
                    loops = n;
                    break;
                case "-h" or "--help":
                    throw new UsageException();
                default:
                    throw new UsageException($"unknown argument '{args[i]}'");
            }
        }
        return new DaemonOptions(simulate, demo, runDir, image, cli, verbose)
        {
            GrantMode = grantMode,
            BusyPollMicroseconds = busyPoll,
            StateDirectory = stateDir,
            UsbfsBudget = usbfsBudget,
            AssignmentsPath = assignments,
            PolicyPath = policy,
            NoAssignments = noAssignments,
            Loops = loops,
        };
    }

    public const string Usage = """
        usage: xenpvusbd [--simulate [--run-dir DIR]] [--demo [--image FILE] [--cli PATH]]
                         [--grant-mode copy|map] [--busy-poll USEC] [--state-dir DIR]
                         [--usbfs-budget KIB] [--assignments FILE] [--policy FILE]
                         [--no-assignments] [--loops N] [-v]

          (no option)   serve backend/vusb on this Xen dom0
          --simulate    serve a built-in simulated Xen host instead (xenstored socket in --run-dir)
          --demo        simulated host plus a guest: attach an emulated stick and keyboard with the
                        CLI, let the guest use them, and exit
          --grant-mode  how URB data moves for controllers that do not say (backend node grant-mode):
                        copy (default: grant copy into the daemon's buffers) or map (bulk and
                        interrupt pages mapped and handed to the device in place)
          --busy-poll   keep polling a ring this many microseconds after its last request or
                        answer before sleeping on its event channel (default 50; 0 disables)
          --usbfs-budget  usbfs memory (KiB) one controller may have in flight at its devices;
                        more waits (default 1/16 of usbcore's usbfs_memory_mb, so one guest
                        cannot use up what every usbfs user in dom0 shares)
          --state-dir   where connected controllers keep their recovery journals, so that a
                        restarted daemon takes them over (default $RUNTIME_DIRECTORY, else
                        /run/xenpvusb; a tmpfs: it must survive the daemon, not the host)
          --assignments the persistent assignments to apply when domains appear, devices are
                        plugged in and the file changes (default /etc/xenpvusb/assignments.conf)
          --policy      the USB policy those assignments obey (default /etc/xenpvusb/usb-policy.conf;
                        without it: hubs denied, everything else allowed)
          --no-assignments  serve controllers only; apply no persistent assignments
          --loops       event-loop threads the controllers are spread over, each controller with
                        its devices on one (default: one per CPU, at most 8)
          -v            debug logging
        """;
}

internal sealed class UsageException : Exception
{
    public UsageException(string? message = null) : base(message)
    {
    }
}
