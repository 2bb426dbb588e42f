using CsCheck;
using XenPvUsb.Backend;
using XenPvUsb.Fuzz;

namespace XenPvUsb.Tests.Fuzz;

/// <summary>
/// The fuzzer of `make fuzz` at a small count, with a fixed seed: a few thousand hostile requests,
/// ring index and xenstore games, the bystander reading throughout, every invariant checked.
/// A failure prints the seed of the episode that broke something (replay: xenpvusb-fuzz --episode SEED).
/// </summary>
[TestFixture]
[NonParallelizable]
public sealed class FuzzRunTests
{
    /// <summary>Fixed so that `make test` is deterministic in what it generates (the timing of the daemon is not).</summary>
    public static readonly string DefaultSeed = new PCG(8, 2026).ToString();

    [TestCase(GrantMode.Copy, 4000)]
    [TestCase(GrantMode.Map, 2000)]
    public async Task HostileGuest_NeverFaultsTheDaemon_NorDisturbsTheBystander(GrantMode mode, int requests)
    {
        string seed = Environment.GetEnvironmentVariable("XENPVUSB_FUZZ_SEED") ?? DefaultSeed;
        var output = new StringWriter();
        FuzzResult r = await FuzzRunner.RunAsync(new FuzzOptions { Requests = requests, Seed = seed, GrantMode = mode, ProgressSeconds = 0 }, output);
        TestContext.Out.WriteLine(output.ToString());
        Assert.That(r.Findings, Is.Empty, output.ToString());
        Assert.That(r.Stats.Requests, Is.GreaterThanOrEqualTo(requests));
        Assert.That(r.Stats.BystanderReads, Is.GreaterThan(0), "the bystander read while the hostile guest played");
        Assert.That(r.Stats.Counters.Keys.Count(k => k.StartsWith("ring-games:", StringComparison.Ordinal)), Is.GreaterThan(0), "ring games were played");
    }
}
