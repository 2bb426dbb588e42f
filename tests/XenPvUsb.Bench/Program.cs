using System.Diagnostics;
using System.Globalization;
using XenPvUsb.Backend;
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

    private static async Task<int> Main()
    {
        Console.WriteLine($"xenpvusb bench: bulk IN 512 B URBs, null device, {Environment.ProcessorCount} cores, {s_measure.TotalSeconds:0} s per run");
        foreach (int busyPoll in new[] { 0, EventLoop.DefaultBusyPollMicroseconds })
        {
            Console.WriteLine($"backend busy-poll window {busyPoll} us");
            Console.WriteLine($"{"controllers",-12} {"URB/s",10} {"p50 us",8} {"p99 us",8} {"p99.9 us",9} {"RSS MiB",8}");
            foreach (int n in new[] { 1, 16 })
            {
                await RunAsync(n, busyPoll).ConfigureAwait(false);
            }
        }
        return 0;
    }

    private static async Task RunAsync(int controllers, int busyPollMicroseconds)
    {
        string dir = Path.Combine(Path.GetTempPath(), $"xenpvusb-bench-{Environment.ProcessId}-{controllers}");
        await using SimulatedXenHost sim = await SimulatedXenHost.StartAsync(dir).ConfigureAwait(false);
        using var loop = new EventLoop(busyPollMicroseconds: busyPollMicroseconds);
        await using XenStoreConnection dom0 = await XenStoreConnection.ConnectAsync(sim.Dom0SocketPath).ConfigureAwait(false);
        await using var registry = new BackendRegistry(sim.CreateBackendHost(dom0, loop, usb: new NullUsbHost()));
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

        List<long> all = samples.SelectMany(s => s).ToList();
        all.Sort();
        double us(long ticks) => ticks * 1e6 / Stopwatch.Frequency;
        double rate = all.Count / s_measure.TotalSeconds;
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{controllers,-12} {rate,10:0} {us(Percentile(all, 0.50)),8:0.0} {us(Percentile(all, 0.99)),8:0.0} {us(Percentile(all, 0.999)),9:0.0} {rssLoaded / 1048576.0,8:0.0}"));
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{"",-12} process RSS before guests {rssIdle / 1048576.0:0.0} MiB (daemon side + simulator), after {rssLoaded / 1048576.0:0.0} MiB (with {controllers} simulated guests in the same process)"));
        foreach (SimulatedFrontend fe in frontends)
        {
            await fe.DisposeAsync().ConfigureAwait(false);
        }
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
