using System.Globalization;
using XenPvUsb.Backend;

namespace XenPvUsb.Fuzz;

/// <summary>
/// make fuzz: hostile requests, ring index games and xenstore games through the real backend on the
/// simulated host while a bystander guest reads its stick. Exit status 1 on any finding.
/// Usage: xenpvusb-fuzz [--requests N] [--seed SEED] [--episode SEED] [--grant-mode copy|map|both] [-v]
/// </summary>
internal static class Program
{
    private static async Task<int> Main(string[] args)
    {
        long requests = 1_000_000;
        string? seed = null;
        string? episode = null;
        string mode = "both";
        bool verbose = false;
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--requests":
                    requests = long.Parse(args[++i], CultureInfo.InvariantCulture);
                    break;
                case "--seed":
                    seed = args[++i];
                    break;
                case "--episode":
                    episode = args[++i];
                    break;
                case "--grant-mode":
                    mode = args[++i];
                    break;
                case "-v":
                    verbose = true;
                    break;
                default:
                    Console.Error.WriteLine("usage: xenpvusb-fuzz [--requests N] [--seed SEED] [--episode SEED] [--grant-mode copy|map|both] [-v]");
                    return 2;
            }
        }
        // "both": four fifths of the requests against a grant-copy controller, one fifth against a grant-map one.
        var runs = mode switch
        {
            "copy" => new[] { (GrantMode.Copy, requests) },
            "map" => [(GrantMode.Map, requests)],
            _ => [(GrantMode.Copy, requests * 4 / 5), (GrantMode.Map, requests - (requests * 4 / 5))],
        };
        int failed = 0;
        long total = 0;
        TimeSpan elapsed = TimeSpan.Zero;
        foreach ((GrantMode grantMode, long count) in runs)
        {
            FuzzResult r = await FuzzRunner.RunAsync(new FuzzOptions { Requests = count, Seed = seed, Episode = episode, GrantMode = grantMode, Verbose = verbose }, Console.Out);
            failed += r.Findings.Count;
            total += r.Stats.Requests;
            elapsed += r.Elapsed;
        }
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"fuzz: {total} requests in {elapsed.TotalSeconds:0} s, {failed} findings"));
        return failed == 0 ? 0 : 1;
    }
}
