using System.Diagnostics;
using System.Globalization;
using XenPvUsb.Backend;
using XenPvUsb.Simulation.Devices;
using XenPvUsb.Simulation.Guest;
using XenPvUsb.Simulation.Host;
using XenPvUsb.Toolstack;
using XenPvUsb.Usb;
using XenPvUsb.Usbif;
using XenPvUsb.Xen;
using XenPvUsb.XenStore;

namespace XenPvUsb.Bench;

/// <summary>
/// URBs through the real backend code (ring, validation, grant copy, dispatch, completion, event
/// channels as eventfds, the epoll loop) on the simulated host against a device that completes at
/// once. Each controller has one guest thread with one URB outstanding, so the latency is the round
/// trip from guest submit to guest completion. Prints figures; asserts nothing.
/// </summary>
internal static class Program
{
    private static readonly TimeSpan s_warmup = TimeSpan.FromSeconds(1);
    private static readonly TimeSpan s_measure = TimeSpan.FromSeconds(4);

    /// <summary>Sections to run: polling, scaling, events, isolation (all when none is named).</summary>
    private static async Task<int> Main(string[] args)
    {
        bool all = args.Length == 0;
        bool Run(string section) => all || args.Contains(section);
        Console.WriteLine($"xenpvusb bench: bulk IN 512 B URBs, null device, {Environment.ProcessorCount} cores, {s_measure.TotalSeconds:0} s per run");
        int cores = Environment.ProcessorCount;
        // The polling guest spins on a core of its own: the backend's loops get the others.
        int pollLoops = Math.Max(1, cores - 1);
        Console.WriteLine();
        Console.WriteLine("polling frontend: the guest spins on its rings and never asks for an event; the backend busy-polls, so");
        Console.WriteLine($"  no event channel and no wake-up is in the path: the round trip is the backend's work plus the guest's own");
        Console.WriteLine($"  (grant, ring slot, copy-out). One guest thread drives every controller; {pollLoops} backend loop(s) ({cores} cores).");
        Console.WriteLine($"{"controllers",-12} {"in flight",9} {"URB/s",10} {"p50 us",8} {"p99 us",8} {"p99.9 us",9}");
        foreach ((int n, int window) in new[] { (1, 1), (1, 8), (16, 1), (64, 1) })
        {
            if (Run("polling"))
            {
                await RunPolledAsync(n, window, pollLoops).ConfigureAwait(false);
            }
        }
        Console.WriteLine();
        Console.WriteLine("controllers sharded over loops (event-driven guests: one thread each, sleeping on its event channel; busy-poll 0)");
        Console.WriteLine($"{"controllers",-12} {"loops",6} {"URB/s",10} {"p50 us",8} {"p99 us",8} {"p99.9 us",9}");
        foreach (int n in new[] { 1, 16, 64 })
        {
            for (int loops = 1; loops <= cores && Run("scaling"); loops *= 2)
            {
                await RunAsync(n, 0, loopCount: loops, scaling: true).ConfigureAwait(false);
            }
        }
        Console.WriteLine();
        foreach (int busyPoll in Run("events") ? new[] { 0, EventLoop.DefaultBusyPollMicroseconds } : [])
        {
            Console.WriteLine($"backend busy-poll window {busyPoll} us");
            Console.WriteLine($"{"controllers",-12} {"URB/s",10} {"p50 us",8} {"p99 us",8} {"p99.9 us",9} {"RSS MiB",8}");
            foreach (int n in new[] { 1, 16 })
            {
                await RunAsync(n, busyPoll).ConfigureAwait(false);
            }
        }
        if (!Run("isolation"))
        {
            return 0;
        }
        Console.WriteLine();
        Console.WriteLine("isolation: one guest streams (as above, 1 controller) while another guest's controller has");
        Console.WriteLine("  devices: a device whose operations take 2 s (SET_CONFIGURATION and CLEAR_HALT, in a loop) and one that never");
        Console.WriteLine("           completes a transfer nor a cancel (URBs submitted, then unlinked)");
        Console.WriteLine("  flood:   its ring flooded with malformed requests as fast as its thread can (it shares these cores)");
        Console.WriteLine($"{"run",-28} {"URB/s",10} {"p50 us",8} {"p99 us",8} {"p99.9 us",9}");
        // Interleaved rounds, medians: on a machine shared with other work, the load drifts between runs.
        const int Rounds = 3;
        foreach (int busyPoll in new[] { 0, EventLoop.DefaultBusyPollMicroseconds })
        {
            var p99 = new Dictionary<Disturbance, List<double>>();
            HostileCounts d = new(), f = new();
            for (int round = 1; round <= Rounds; round++)
            {
                foreach (Disturbance mode in new[] { Disturbance.None, Disturbance.Devices, Disturbance.Flood })
                {
                    string name = mode switch { Disturbance.None => "quiet", Disturbance.Devices => "devices", _ => "flood" };
                    (double value, HostileCounts counts) = await RunAsync(1, busyPoll, mode, $"{name}, busy-poll {busyPoll} us, #{round}").ConfigureAwait(false);
                    (p99.TryGetValue(mode, out List<double>? list) ? list : p99[mode] = []).Add(value);
                    HostileCounts total = mode == Disturbance.Flood ? f : d;
                    total.SlowOperations += counts.SlowOperations;
                    total.HungUrbs += counts.HungUrbs;
                    total.Flooded += counts.Flooded;
                }
            }
            double quiet = Median(p99[Disturbance.None]);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{"",-28} median p99 of {Rounds}: quiet {quiet:0.0} us, devices {Median(p99[Disturbance.Devices]):0.0} us, flood {Median(p99[Disturbance.Flood]):0.0} us"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{"",-28} p99 devices/quiet = {Median(p99[Disturbance.Devices]) / quiet:0.00} ({d.SlowOperations} slow operations, {d.HungUrbs} URBs hung and unlinked); flood/quiet = {Median(p99[Disturbance.Flood]) / quiet:0.00} ({f.Flooded} malformed requests refused)"));
        }
        return 0;
    }

    private static double Median(List<double> values)
    {
        double[] sorted = [.. values.Order()];
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[(sorted.Length / 2) - 1] + sorted[sorted.Length / 2]) / 2;
    }

    private enum Disturbance
    {
        None,
        Devices,
        Flood,
    }

    private sealed class HostileCounts
    {
        public long SlowOperations;
        public long HungUrbs;
        public long Flooded;
    }

    /// <summary>
    /// A guest whose controller has a slow device on port 1 (2 s per operation), a device on port 2 that never
    /// completes a transfer or a cancel, and a null device on port 3; it keeps all three busy until <paramref name="stop"/> is cancelled.
    /// </summary>
    private static async Task<(SimulatedFrontend Frontend, Task Work)> StartHostileGuestAsync(SimulatedXenHost sim, VusbToolstack toolstack,
        XenStoreConnection dom0, HostileCounts counts, Disturbance disturbance, CancellationTokenSource stop)
    {
        SimulatedGuest guest = await sim.CreateGuestAsync("hostile").ConfigureAwait(false);
        Task<SimulatedFrontend> connecting = guest.ConnectFrontendAsync(0);
        int devId = await toolstack.CreateControllerAsync(guest.Id, 2, 3).ConfigureAwait(false);
        SimulatedFrontend fe = await connecting.ConfigureAwait(false);
        string be = $"/local/domain/0/backend/vusb/{guest.Id.Value}/{devId}";
        await dom0.WriteAsync($"{be}/port/1", "2-90").ConfigureAwait(false);
        await dom0.WriteAsync($"{be}/port/2", "2-91").ConfigureAwait(false);
        await dom0.WriteAsync($"{be}/port/3", "2-92").ConfigureAwait(false);
        for (int p = 1; p <= 3; p++)
        {
            await fe.WaitForPortAsync(p, connected: true, TimeSpan.FromSeconds(10)).ConfigureAwait(false);
        }
        if (disturbance == Disturbance.Flood)
        {
            return (fe, Task.Run(async () =>
            {
                var bad = new usbif_urb_request { id = 900, pipe = UsbifPipe.Create(3, 0, 1, true, UsbTransferType.Bulk).Value, nr_buffer_segs = 40 };
                while (!stop.IsCancellationRequested)
                {
                    var batch = new Task<usbif_urb_response>[8];
                    for (int i = 0; i < batch.Length; i++)
                    {
                        bad.id = (ushort)(900 + i);
                        batch[i] = fe.SubmitRawAsync(bad);
                    }
                    await Task.WhenAll(batch).ConfigureAwait(false);
                    Interlocked.Add(ref counts.Flooded, batch.Length);
                }
            }));
        }
        Task slow = Task.Run(async () =>
        {
            UsbifPipe ctrl = UsbifPipe.Create(1, 0, 0, false, UsbTransferType.Control);
            while (!stop.IsCancellationRequested)
            {
                Task<UrbResult> setConfig = fe.SubmitAsync(ctrl, GuestUsbDevice.Setup(0x00, 9, 1, 0, 0), Memory<byte>.Empty);
                Task<UrbResult> clearHalt = fe.SubmitAsync(ctrl, GuestUsbDevice.Setup(0x02, 1, 0, 0x81, 0), Memory<byte>.Empty);
                await Task.WhenAll(setConfig, clearHalt).ConfigureAwait(false);
                Interlocked.Add(ref counts.SlowOperations, 2);
            }
        });
        Task hung = Task.Run(async () =>
        {
            UsbifPipe bulk = UsbifPipe.Create(2, 0, 1, true, UsbTransferType.Bulk);
            for (int i = 0; i < 4 && !stop.IsCancellationRequested; i++)
            {
                // Unlinked 10 ms after submission; the device never gives it back: it holds its slot for good.
                using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(10));
                _ = fe.SubmitAsync(bulk, 0, new byte[4096], cancellationToken: cts.Token);
                Interlocked.Increment(ref counts.HungUrbs);
                await Task.Delay(50, CancellationToken.None).ConfigureAwait(false);
            }
        });
        return (fe, Task.WhenAll(slow, hung));
    }

    /// <summary>The simulated host, <paramref name="loopCount"/> backend loops, the registry and one controller per guest with a null device on port 1.</summary>
    private sealed class Rig : IAsyncDisposable
    {
        public required SimulatedXenHost Sim { get; init; }
        public required EventLoop[] Loops { get; init; }
        public required XenStoreConnection Dom0 { get; init; }
        public required BackendRegistry Registry { get; init; }
        public required VusbToolstack Toolstack { get; init; }
        public required SimulatedFrontend[] Frontends { get; init; }
        public long RssIdle { get; init; }

        public static async Task<Rig> StartAsync(int controllers, int busyPollMicroseconds, int loopCount)
        {
            string dir = Path.Combine(Path.GetTempPath(), $"xenpvusb-bench-{Environment.ProcessId}-{controllers}");
            SimulatedXenHost sim = await SimulatedXenHost.StartAsync(dir).ConfigureAwait(false);
            EventLoop[] loops = [.. Enumerable.Range(0, loopCount).Select(_ => new EventLoop(busyPollMicroseconds: busyPollMicroseconds))];
            XenStoreConnection dom0 = await XenStoreConnection.ConnectAsync(sim.Dom0SocketPath).ConfigureAwait(false);
            var usb = new DecoratingUsbHost(new NullUsbHost());
            usb.Wrap("2-90", d => new SlowUsbDevice(d) { OperationDelay = TimeSpan.FromSeconds(2) });
            usb.Wrap("2-91", d => new SlowUsbDevice(d) { HungEndpoint = 0x81, IgnoresCancels = true });
            BackendHost host = sim.CreateBackendHost(dom0, loops[0], usb: usb);
            host.ControllerLoops = loops;
            var registry = new BackendRegistry(host);
            await registry.StartAsync().ConfigureAwait(false);
            var toolstack = new VusbToolstack(dom0, sim.SysfsRoot);
            long rssIdle = Rss();

            var frontends = new SimulatedFrontend[controllers];
            for (int i = 0; i < controllers; i++)
            {
                SimulatedGuest guest = await sim.CreateGuestAsync($"bench{i}").ConfigureAwait(false);
                Task<SimulatedFrontend> connecting = guest.ConnectFrontendAsync(0, startEventThread: false);
                int devId = await toolstack.CreateControllerAsync(guest.Id, 2, 1).ConfigureAwait(false);
                frontends[i] = await connecting.ConfigureAwait(false);
                // As `xenstore-write` would: the daemon attaches whatever bus id appears in port/1.
                await dom0.WriteAsync($"/local/domain/0/backend/vusb/{guest.Id.Value}/{devId}/port/1", $"2-{i + 1}").ConfigureAwait(false);
            }
            foreach (SimulatedFrontend fe in frontends)
            {
                var sw = Stopwatch.StartNew();
                while (fe.PortSpeed(1) == 0 && sw.Elapsed < TimeSpan.FromSeconds(10))
                {
                    // Conn events are only read when the frontend polls: submit a probe that refreshes them.
                    fe.SubmitSync(UsbifPipe.Create(1, 0, 0, true, UsbTransferType.Control), GuestUsbDevice.Setup(0x80, 0, 0, 0, 2), new byte[2]);
                }
            }
            return new Rig { Sim = sim, Loops = loops, Dom0 = dom0, Registry = registry, Toolstack = toolstack, Frontends = frontends, RssIdle = rssIdle };
        }

        public async ValueTask DisposeAsync()
        {
            foreach (SimulatedFrontend fe in Frontends)
            {
                await fe.DisposeAsync().ConfigureAwait(false);
            }
            await Registry.DisposeAsync().ConfigureAwait(false);
            await Dom0.DisposeAsync().ConfigureAwait(false);
            foreach (EventLoop l in Loops)
            {
                l.Dispose();
            }
            await Sim.DisposeAsync().ConfigureAwait(false);
        }
    }

    /// <summary>
    /// One guest thread keeps <paramref name="window"/> URBs in flight on each controller, spinning on the rings (no
    /// event either way); the latency of a URB is from its post to the moment the guest sees its answer.
    /// </summary>
    private static async Task RunPolledAsync(int controllers, int window, int loopCount)
    {
        await using Rig rig = await Rig.StartAsync(controllers, EventLoop.DefaultBusyPollMicroseconds, loopCount).ConfigureAwait(false);
        var samples = new List<long>(8_000_000);
        long measureFrom = Stopwatch.GetTimestamp() + (long)(s_warmup.TotalSeconds * Stopwatch.Frequency);
        long stopAt = measureFrom + (long)(s_measure.TotalSeconds * Stopwatch.Frequency);
        var thread = new Thread(() => DrivePolled(rig.Frontends, window, samples, measureFrom, stopAt)) { IsBackground = true };
        thread.Start();
        thread.Join();
        samples.Sort();
        double us(long ticks) => ticks * 1e6 / Stopwatch.Frequency;
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{controllers,-12} {window,9} {samples.Count / s_measure.TotalSeconds,10:0} {us(Percentile(samples, 0.50)),8:0.0} {us(Percentile(samples, 0.99)),8:0.0} {us(Percentile(samples, 0.999)),9:0.0}"));
    }

    private static void DrivePolled(SimulatedFrontend[] frontends, int window, List<long> samples, long measureFrom, long stopAt)
    {
        UsbifPipe pipe = UsbifPipe.Create(1, 0, 1, true, UsbTransferType.Bulk);
        int n = frontends.Length;
        var buffers = new byte[n * SimulatedFrontend.ShadowSlots][];
        var posted = new long[n * SimulatedFrontend.ShadowSlots];
        Span<int> done = stackalloc int[SimulatedFrontend.ShadowSlots];
        var results = new UrbResult[SimulatedFrontend.ShadowSlots];
        for (int f = 0; f < n; f++)
        {
            for (int w = 0; w < window; w++)
            {
                byte[] b = new byte[512];
                long t0 = Stopwatch.GetTimestamp();
                int slot = frontends[f].PostPolled(pipe, b);
                buffers[(f * SimulatedFrontend.ShadowSlots) + slot] = b;
                posted[(f * SimulatedFrontend.ShadowSlots) + slot] = t0;
            }
        }
        while (true)
        {
            for (int f = 0; f < n; f++)
            {
                SimulatedFrontend fe = frontends[f];
                int got = fe.ReapPolled(done, results);
                if (got == 0)
                {
                    continue;
                }
                long now = Stopwatch.GetTimestamp();
                if (now > stopAt)
                {
                    return;
                }
                for (int k = 0; k < got; k++)
                {
                    int at = (f * SimulatedFrontend.ShadowSlots) + done[k];
                    if (results[k].Status != 0)
                    {
                        throw new InvalidOperationException($"URB failed: {results[k].Status}");
                    }
                    if (posted[at] >= measureFrom)
                    {
                        samples.Add(now - posted[at]);
                    }
                    byte[] b = buffers[at];
                    // From before the post: the backend may answer while the guest is still in it.
                    long t0 = Stopwatch.GetTimestamp();
                    int slot = fe.PostPolled(pipe, b);
                    int next = (f * SimulatedFrontend.ShadowSlots) + slot;
                    buffers[next] = b;
                    posted[next] = t0;
                }
            }
        }
    }

    private static async Task<(double P99Microseconds, HostileCounts Counts)> RunAsync(int controllers, int busyPollMicroseconds,
        Disturbance disturbance = Disturbance.None, string? label = null, int loopCount = 1, bool scaling = false)
    {
        await using Rig rig = await Rig.StartAsync(controllers, busyPollMicroseconds, loopCount).ConfigureAwait(false);
        SimulatedXenHost sim = rig.Sim;
        XenStoreConnection dom0 = rig.Dom0;
        VusbToolstack toolstack = rig.Toolstack;
        SimulatedFrontend[] frontends = rig.Frontends;
        long rssIdle = rig.RssIdle;

        var counts = new HostileCounts();
        using var stopHostile = new CancellationTokenSource();
        (SimulatedFrontend Frontend, Task Work)? hostile = disturbance != Disturbance.None
            ? await StartHostileGuestAsync(sim, toolstack, dom0, counts, disturbance, stopHostile).ConfigureAwait(false)
            : null;

        var threads = new Thread[controllers];
        var samples = new List<long>[controllers];
        long stopAt = 0;
        long measureFrom = Stopwatch.GetTimestamp() + (long)(s_warmup.TotalSeconds * Stopwatch.Frequency);
        stopAt = measureFrom + (long)(s_measure.TotalSeconds * Stopwatch.Frequency);
        for (int i = 0; i < controllers; i++)
        {
            SimulatedFrontend fe = frontends[i];
            var list = samples[i] = new List<long>(4_000_000 / controllers);
            threads[i] = new Thread(() => Drive(fe, list, measureFrom, stopAt)) { IsBackground = true };
            threads[i].Start();
        }
        foreach (Thread t in threads)
        {
            t.Join();
        }
        long rssLoaded = Rss();
        stopHostile.Cancel();

        List<long> all = samples.SelectMany(s => s).ToList();
        all.Sort();
        double us(long ticks) => ticks * 1e6 / Stopwatch.Frequency;
        double rate = all.Count / s_measure.TotalSeconds;
        if (scaling)
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{controllers,-12} {loopCount,6} {rate,10:0} {us(Percentile(all, 0.50)),8:0.0} {us(Percentile(all, 0.99)),8:0.0} {us(Percentile(all, 0.999)),9:0.0}"));
        }
        else if (label is not null)
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{label,-28} {rate,10:0} {us(Percentile(all, 0.50)),8:0.0} {us(Percentile(all, 0.99)),8:0.0} {us(Percentile(all, 0.999)),9:0.0}"));
        }
        else
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{controllers,-12} {rate,10:0} {us(Percentile(all, 0.50)),8:0.0} {us(Percentile(all, 0.99)),8:0.0} {us(Percentile(all, 0.999)),9:0.0} {rssLoaded / 1048576.0,8:0.0}"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{"",-12} process RSS before guests {rssIdle / 1048576.0:0.0} MiB (daemon side + simulator), after {rssLoaded / 1048576.0:0.0} MiB (with {controllers} simulated guests in the same process)"));
        }
        if (hostile is { } h)
        {
            // Its hung URBs are never answered: its teardown gives up after the frontend's removal timeout.
            SimulatedFrontend.RemovalTimeout = TimeSpan.FromMilliseconds(100);
            await h.Frontend.DisposeAsync().ConfigureAwait(false);
        }
        return (us(Percentile(all, 0.99)), counts);
    }

    private static void Drive(SimulatedFrontend fe, List<long> samples, long measureFrom, long stopAt)
    {
        byte[] buffer = new byte[512];
        UsbifPipe pipe = UsbifPipe.Create(1, 0, 1, true, UsbTransferType.Bulk);
        while (true)
        {
            long t0 = Stopwatch.GetTimestamp();
            UrbResult r = fe.SubmitSync(pipe, 0, buffer);
            long t1 = Stopwatch.GetTimestamp();
            if (r.Status != 0)
            {
                throw new InvalidOperationException($"URB failed: {r.Status}");
            }
            if (t0 >= measureFrom)
            {
                if (t1 > stopAt)
                {
                    return;
                }
                samples.Add(t1 - t0);
            }
        }
    }

    private static long Percentile(List<long> sorted, double p) => sorted.Count == 0 ? 0 : sorted[Math.Min(sorted.Count - 1, (int)(sorted.Count * p))];

    private static long Rss()
    {
        foreach (string line in File.ReadLines("/proc/self/status"))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
            {
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) * 1024;
            }
        }
        return 0;
    }
}
