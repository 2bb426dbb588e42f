using XenPvUsb.Rings;

namespace XenPvUsb.Tests.Rings;

[TestFixture]
public sealed class RingIndexTests
{
    [TestCase(148, 16)]
    [TestCase(4, 512)]
    [TestCase(100, 32)]
    [TestCase(4032, 1)]
    [TestCase(4033, 0)]
    public void RingSize_RoundsDownToPowerOfTwo(int entry, int expected)
    {
        Assert.That(RingIndex.RingSize(4096, entry), Is.EqualTo(expected));
    }

    [Test]
    public void RequestProdOverflow_AllowsAFullRingButNoMore()
    {
        Assert.That(RingIndex.RequestProdOverflow(16, 0, 16), Is.False);
        Assert.That(RingIndex.RequestProdOverflow(17, 0, 16), Is.True);
        Assert.That(RingIndex.RequestProdOverflow(5, 10, 16), Is.True, "a producer behind the responses is nonsense too");
    }

    [Test]
    public void RequestProdOverflow_WorksAcrossWrap()
    {
        Assert.That(RingIndex.RequestProdOverflow(5, uint.MaxValue - 10, 16), Is.False);
        Assert.That(RingIndex.RequestProdOverflow(6, uint.MaxValue - 10, 16), Is.True);
    }

    [Test]
    public void NeedsNotify_FollowsTheEventIndex()
    {
        Assert.That(RingIndex.NeedsNotify(0, 1, 1), Is.True);
        Assert.That(RingIndex.NeedsNotify(1, 3, 2), Is.True);
        Assert.That(RingIndex.NeedsNotify(1, 3, 4), Is.False, "the other side asked to be woken later");
        Assert.That(RingIndex.NeedsNotify(3, 3, 1), Is.False, "nothing new");
        Assert.That(RingIndex.NeedsNotify(uint.MaxValue, 1, 0), Is.True, "wrap");
    }

    [Test]
    public void UnconsumedRequests_IsBoundedByFreeResponseSlots()
    {
        Assert.That(RingIndex.UnconsumedRequests(10, 4, 0, 16), Is.EqualTo(6));
        Assert.That(RingIndex.UnconsumedRequests(40, 16, 0, 16), Is.EqualTo(0));
    }
}
