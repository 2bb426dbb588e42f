using XenPvUsb.Simulation.Devices;
using XenPvUsb.Simulation.Guest;

namespace XenPvUsb.Fuzz;

/// <summary>
/// The other guest: reads its own stick in a loop, random ranges, every byte compared with the image.
/// Any error, mismatch or a read that takes more than <see cref="StallLimit"/> is a finding.
/// </summary>
public sealed class Bystander
{
    public static readonly TimeSpan StallLimit = TimeSpan.FromSeconds(10);

    private readonly SimulatedFrontend _frontend;
    private readonly GuestMassStorage _storage;
    private readonly int _seed;
    private readonly FuzzStats _stats;
    private readonly Random _random;
    private readonly CancellationTokenSource _stop = new();
    private Task? _loop;

    private Bystander(SimulatedFrontend frontend, GuestMassStorage storage, int seed, FuzzStats stats)
    {
        _frontend = frontend;
        _storage = storage;
        _seed = seed;
        _stats = stats;
        _random = new Random(seed);
    }

    public string? Error { get; private set; }

    public static async Task<Bystander> StartAsync(SimulatedFrontend frontend, int imageSeed, FuzzStats stats)
    {
        var storage = new GuestMassStorage(await GuestUsbDevice.EnumerateAsync(frontend, 1, 9).ConfigureAwait(false));
        await storage.ReadCapacityAsync().ConfigureAwait(false);
        var b = new Bystander(frontend, storage, imageSeed, stats);
        b._loop = Task.Run(b.LoopAsync);
        return b;
    }

    /// <summary>Reads the whole stick and compares it. Returns null or what went wrong.</summary>
    public async Task<string?> ReadWholeAsync()
    {
        byte[] buf = new byte[GuestMassStorage.BlocksPerCommand * 512];
        byte[] want = new byte[buf.Length];
        long blocks = FuzzWorld.StickBytes / 512;
        for (long lba = 0; lba < blocks; lba += GuestMassStorage.BlocksPerCommand)
        {
            int n = (int)Math.Min(GuestMassStorage.BlocksPerCommand, blocks - lba);
            Memory<byte> dst = buf.AsMemory(0, n * 512);
            await _storage.ReadAsync((uint)lba, dst).ConfigureAwait(false);
            StickImage.Fill(want.AsSpan(0, n * 512), lba * 512, _seed);
            if (!dst.Span.SequenceEqual(want.AsSpan(0, n * 512)))
            {
                return $"bystander: whole read differs from the image at block {lba}";
            }
        }
        return null;
    }

    public async Task StopAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        if (_loop is not null)
        {
            await _loop.ConfigureAwait(false);
        }
    }

    /// <summary>Null while the loop is healthy; a description once it stopped, failed or stalled.</summary>
    public string? Check()
    {
        if (Error is not null)
        {
            return Error;
        }
        if (_frontend.ProtocolError is { } pe)
        {
            return $"bystander frontend protocol error: {pe}";
        }
        long last = Interlocked.Read(ref _lastProgress);
        if (last != 0 && System.Diagnostics.Stopwatch.GetElapsedTime(last) > StallLimit)
        {
            return $"bystander made no progress for {StallLimit.TotalSeconds} s";
        }
        return null;
    }

    private long _lastProgress;

    private async Task LoopAsync()
    {
        byte[] buf = new byte[GuestMassStorage.BlocksPerCommand * 512];
        byte[] want = new byte[buf.Length];
        long blocks = FuzzWorld.StickBytes / 512;
        Interlocked.Exchange(ref _lastProgress, System.Diagnostics.Stopwatch.GetTimestamp());
        while (!_stop.IsCancellationRequested)
        {
            int n = _random.Next(1, GuestMassStorage.BlocksPerCommand + 1);
            long lba = _random.NextInt64(0, blocks - n + 1);
            _storage.ScatterReads = _random.Next(4) == 0;
            Memory<byte> dst = buf.AsMemory(0, n * 512);
            try
            {
                await _storage.ReadAsync((uint)lba, dst).WaitAsync(StallLimit).ConfigureAwait(false);
            }
            catch (Exception e)
            {
                Error = $"bystander read of {n} blocks at {lba} failed: {e.GetType().Name}: {e.Message}";
                return;
            }
            StickImage.Fill(want.AsSpan(0, n * 512), lba * 512, _seed);
            if (!dst.Span.SequenceEqual(want.AsSpan(0, n * 512)))
            {
                Error = $"bystander read of {n} blocks at {lba} returned wrong data";
                return;
            }
            Interlocked.Increment(ref _stats.BystanderReads);
            Interlocked.Add(ref _stats.BystanderBytes, n * 512);
            Interlocked.Exchange(ref _lastProgress, System.Diagnostics.Stopwatch.GetTimestamp());
        }
    }
}
