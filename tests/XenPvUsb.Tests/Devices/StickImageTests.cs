using System.Diagnostics;
using XenPvUsb.Simulation.Devices;

namespace XenPvUsb.Tests.Devices;

[TestFixture]
public sealed class StickImageTests
{
    private TempDirectory _temp = null!;

    [SetUp]
    public void SetUp() => _temp = new TempDirectory();

    [TearDown]
    public void TearDown() => _temp.Dispose();

    [Test]
    public void SameSeed_SameContent_DifferentSeed_DifferentContent()
    {
        StickImage.Create(_temp.File("a.img"), 64 * 1024, 1);
        StickImage.Create(_temp.File("b.img"), 64 * 1024, 1);
        StickImage.Create(_temp.File("c.img"), 64 * 1024, 2);

        byte[] a = File.ReadAllBytes(_temp.File("a.img"));
        Assert.That(a, Has.Length.EqualTo(64 * 1024));
        Assert.That(File.ReadAllBytes(_temp.File("b.img")), Is.EqualTo(a));
        Assert.That(File.ReadAllBytes(_temp.File("c.img")), Is.Not.EqualTo(a));
        Assert.That(a.Distinct().Count(), Is.EqualTo(256), "looks random");
    }

    [Test]
    public void Fill_RegeneratesAnyRangeOfTheFile()
    {
        StickImage.Create(_temp.File("a.img"), 3 * 1024 * 1024, 5);
        byte[] file = File.ReadAllBytes(_temp.File("a.img"));
        byte[] range = new byte[4096];

        StickImage.Fill(range, (2 * 1024 * 1024) - 1024, 5);

        Assert.That(range, Is.EqualTo(file.AsSpan((2 * 1024 * 1024) - 1024, 4096).ToArray()));
    }

    [Test]
    public void Create_RejectsSizesThatAreNotWholeBlocks()
    {
        Assert.That(() => StickImage.Create(_temp.File("x.img"), 1000, 1), Throws.InstanceOf<ArgumentOutOfRangeException>());
        Assert.That(() => StickImage.Create(_temp.File("x.img"), 0, 1), Throws.InstanceOf<ArgumentOutOfRangeException>());
    }

    [Test]
    public void Create_64MiBDemoImage_IsFast()
    {
        var clock = Stopwatch.StartNew();
        StickImage.Create(_temp.File("demo.img"), 64L * 1024 * 1024, 42);
        clock.Stop();

        TestContext.Out.WriteLine($"64 MiB in {clock.ElapsedMilliseconds} ms");
        Assert.That(new FileInfo(_temp.File("demo.img")).Length, Is.EqualTo(64L * 1024 * 1024));
        // Well under a second on an idle machine; the bound leaves room for a loaded CI box.
        Assert.That(clock.Elapsed, Is.LessThan(TimeSpan.FromSeconds(3)));
    }
}
