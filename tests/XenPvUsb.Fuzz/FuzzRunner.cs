using System.Diagnostics;
using System.Globalization;
using CsCheck;
using XenPvUsb.Backend;
using XenPvUsb.Simulation.Devices;

namespace XenPvUsb.Fuzz;

public sealed record FuzzOptions
{
    /// <summary>Stop once this many requests were put on the hostile guest's ring.</summary>
    public long Requests { get; init; } = 1_000_000;

    /// <summary>The master seed (CsCheck PCG text); null: a random one (printed).</summary>
    public string? Seed { get; init; }

    /// <summary>Only this episode (its seed as printed in a finding), once.</summary>
    public string? Episode { get; init; }

    public GrantMode GrantMode { get; init; } = GrantMode.Copy;

    /// <summary>Progress lines every this many seconds (0: none).</summary>
    public int ProgressSeconds { get; init; } = 30;

    /// <summary>Echo the daemon's warnings and errors.</summary>
    public bool Verbose { get; init; }

    /// <summary>Allowed growth of the managed heap over the run (after a full GC), bytes.</summary>
    public long HeapBound { get; init; } = 32L << 20;

    /// <summary>Allowed growth of the process RSS over the run, bytes (the simulator leaks two ring pages per reconnect by design: see the report).</summary>
    public long RssBound { get; init; } = 256L << 20;
}

public sealed record FuzzResult(FuzzStats Stats, IReadOnlyList<string> Findings, TimeSpan Elapsed, string Seed, string Report)
{
    public bool Passed => Findings.Count == 0;
}

/// <summary>
/// One fuzz run: the simulated host with the real daemon, the hostile guest playing generated
/// episodes, the bystander reading its stick, invariants after every step, checks at the end.
/// </summary>
public static class FuzzRunner
{
    public static async Task<FuzzResult> RunAsync(FuzzOptions options, TextWriter output)
    {
        var stats = new FuzzStats();
        var unobserved = new List<string>();
        EventHandler<UnobservedTaskExceptionEventArgs> onUnobserved = (_, e) =>
        {
            lock (unobserved)
            {
                unobserved.Add(e.Exception.ToString());
            }
        };
        TaskScheduler.UnobservedTaskException += onUnobserved;
        var log = new FuzzLog { Echo = options.Verbose };
        PCG pcg = options.Seed is { } s ? PCG.Parse(s) : options.Episode is { } ep ? PCG.Parse(ep) : PCG.ThreadPCG;
        string seed = pcg.ToString();
        output.WriteLine($"fuzz: seed {seed}, {options.Requests} requests, hostile controller grant mode {options.GrantMode}");
        var sw = Stopwatch.StartNew();
        FuzzWorld world = await FuzzWorld.StartAsync(log).ConfigureAwait(false);
        Bystander? bystander = null;
        HostileGuest? hostile = null;
        long heapBefore = 0;
        long rssBefore = 0;
        long heapAfter = 0;
        long rssAfter = 0;
        try
        {
            string hostileStick = world.PlugStick(HostileGuest.StickSeed, readOnly: true);
            var keyboard = new HidKeyboardDevice();
            string kbd = world.Plug(keyboard);
            // The spare device the toolstack attaches and detaches: a USB audio device, for isochronous traffic.
            string spare = world.Plug(new UsbAudioDevice());
            const int BystanderSeed = 22;
            string bystanderStick = world.PlugStick(BystanderSeed, readOnly: false);
            var h = await world.AddGuestAsync("hostile", options.GrantMode, hostileStick, kbd).ConfigureAwait(false);
            var b = await world.AddGuestAsync("bystander", GrantMode.Copy, bystanderStick).ConfigureAwait(false);
            hostile = new HostileGuest(world, h.Guest, h.Frontend, h.DevId, keyboard, spare, stats);
            await hostile.InitAsync().ConfigureAwait(false);
            bystander = await Bystander.StartAsync(b.Frontend, BystanderSeed, stats).ConfigureAwait(false);

            (heapBefore, rssBefore) = Memory();
            long lastProgress = Stopwatch.GetTimestamp();
            long lastRequests = 0;
            while (stats.Requests < options.Requests && hostile.Fatal is null)
            {
                string episodeSeed = pcg.ToString();
                long t0 = Stopwatch.GetTimestamp();
                FuzzOp[] ops = FuzzOpGenerators.Episode.Generate(pcg, null!, out _);
                int randomSeed = (int)pcg.Next();
                long t1 = Stopwatch.GetTimestamp();
                await hostile.RunEpisodeAsync(ops, episodeSeed, randomSeed).ConfigureAwait(false);
                stats.Count("milliseconds per step kind:(generating episodes)", (long)Stopwatch.GetElapsedTime(t0, t1).TotalMilliseconds);
                stats.Count("milliseconds per step kind:(whole episodes)", (long)Stopwatch.GetElapsedTime(t1).TotalMilliseconds);
                if (bystander.Check() is { } bad)
                {
                    stats.Finding($"episode {episodeSeed}: {bad}");
                    break;
                }
                if (log.ExceptionCount > 0 || unobserved.Count > 0)
                {
                    stats.Finding($"episode {episodeSeed}: the daemon logged {log.ExceptionCount} exceptions, {unobserved.Count} unobserved task exceptions");
                    break;
                }
                if (options.Episode is not null)
                {
                    break;
                }
                if (options.ProgressSeconds > 0 && Stopwatch.GetElapsedTime(lastProgress).TotalSeconds >= options.ProgressSeconds)
                {
                    double dt = Stopwatch.GetElapsedTime(lastProgress).TotalSeconds;
                    output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"  {sw.Elapsed:mm\\:ss} {stats.Requests,9} requests ({(stats.Requests - lastRequests) / dt:0}/s), {stats.Episodes} episodes, {stats.Reconnects} reconnects, bystander {stats.BystanderReads} reads"));
                    lastProgress = Stopwatch.GetTimestamp();
                    lastRequests = stats.Requests;
                }
            }
            TimeSpan fuzzTime = sw.Elapsed;

            // The end: no fault, the bystander's stick whole, the hostile controller still usable.
            await bystander.StopAsync().ConfigureAwait(false);
            if (bystander.Check() is { } bystanderError)
            {
                stats.Finding($"end: {bystanderError}");
            }
            else if (await bystander.ReadWholeAsync().ConfigureAwait(false) is { } wholeError)
            {
                stats.Finding($"end: {wholeError}");
            }
            if (hostile.Fatal is null && await hostile.FinalCheckAsync().ConfigureAwait(false) is { } finalError)
            {
                stats.Finding($"end: {finalError}");
            }
            if (world.Loop.Completion.IsCompleted)
            {
                stats.Finding($"end: the event loop stopped: {world.Loop.Completion.Exception?.GetBaseException()}");
            }
            (heapAfter, rssAfter) = Memory();
            if (heapAfter - heapBefore > options.HeapBound)
            {
                stats.Finding($"end: managed heap grew {Mib(heapAfter - heapBefore)} MiB (bound {Mib(options.HeapBound)} MiB)");
            }
            if (rssAfter - rssBefore > options.RssBound)
            {
                stats.Finding($"end: RSS grew {Mib(rssAfter - rssBefore)} MiB (bound {Mib(options.RssBound)} MiB)");
            }
            GC.Collect();
            GC.WaitForPendingFinalizers();
            GC.Collect();
            foreach (string e in log.Exceptions)
            {
                stats.Finding($"daemon logged an exception: {e}");
            }
            lock (unobserved)
            {
                foreach (string e in unobserved)
                {
                    stats.Finding($"unobserved task exception: {e}");
                }
            }
            string report = Report(options, stats, log, seed, fuzzTime, sw.Elapsed, heapBefore, heapAfter, rssBefore, rssAfter);
            output.Write(report);
            return new FuzzResult(stats, [.. stats.Findings], sw.Elapsed, seed, report);
        }
        finally
        {
            TaskScheduler.UnobservedTaskException -= onUnobserved;
            if (bystander is not null)
            {
                await bystander.StopAsync().ConfigureAwait(false);
            }
            await world.DisposeAsync().ConfigureAwait(false);
        }
    }

    private static string Report(FuzzOptions o, FuzzStats stats, FuzzLog log, string seed, TimeSpan fuzzTime, TimeSpan total,
        long heapBefore, long heapAfter, long rssBefore, long rssAfter)
    {
        var w = new StringWriter(CultureInfo.InvariantCulture);
        w.WriteLine($"fuzz report (seed {seed}, grant mode {o.GrantMode})");
        w.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"  {stats.Requests} requests in {fuzzTime.TotalSeconds:0.0} s ({stats.Requests / Math.Max(0.001, fuzzTime.TotalSeconds):0}/s), {stats.Responses} responses, {stats.Episodes} episodes, {stats.Ops} steps, {stats.Reconnects} reconnects of the hostile controller; {total.TotalSeconds:0.0} s in all"));
        w.WriteLine($"  bystander: {stats.BystanderReads} reads, {stats.BystanderBytes / 1048576} MiB, every byte checked");
        w.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"  memory: managed heap {Mib(heapBefore)} -> {Mib(heapAfter)} MiB (bound +{Mib(o.HeapBound)}), RSS {Mib(rssBefore)} -> {Mib(rssAfter)} MiB (bound +{Mib(o.RssBound)})"));
        w.Write(stats.Format("  "));
        w.WriteLine("  daemon log events (Information and above):");
        foreach (KeyValuePair<string, long> kv in log.Counts.OrderByDescending(kv => kv.Value))
        {
            w.WriteLine($"    {kv.Value,10}  {kv.Key}");
        }
        w.WriteLine(stats.Findings.Count == 0 ? "  findings: none" : $"  findings: {stats.Findings.Count}");
        foreach (string f in stats.Findings.Take(50))
        {
            w.WriteLine($"    {f}");
        }
        return w.ToString();
    }

    private static string Mib(long bytes) => (bytes / 1048576.0).ToString("0.0", CultureInfo.InvariantCulture);

    private static (long Heap, long Rss) Memory()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        long heap = GC.GetTotalMemory(true);
        long rss = 0;
        foreach (string line in File.ReadLines("/proc/self/status"))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
            {
                rss = long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) * 1024;
            }
        }
        return (heap, rss);
    }
}
