using XenPvUsb.Xen;
using XenPvUsb.XenStore;

namespace XenPvUsb.Tests.XenStore;

[TestFixture]
public sealed class ConnectionOperationTests : XenStoreTestBase
{
    [Test]
    public async Task Read_MissingNode_ReturnsNull() =>
        Assert.That(await Dom0.ReadAsync("/nope"), Is.Null);

    [Test]
    public async Task Write_ThenRead_ReturnsValue()
    {
        await Dom0.WriteAsync("/a", "hello");

        Assert.That(await Dom0.ReadAsync("/a"), Is.EqualTo("hello"));
    }

    [Test]
    public async Task Write_CreatesMissingParents()
    {
        await Dom0.WriteAsync("/x/y/z", "1");

        Assert.That(await Dom0.ReadAsync("/x/y"), Is.EqualTo(string.Empty));
        Assert.That(await Dom0.DirectoryAsync("/x"), Is.EqualTo(new List<string> { "y" }));
    }

    [Test]
    public async Task Write_EmptyValue_ReadsBackEmpty()
    {
        await Dom0.WriteAsync("/e", string.Empty);

        Assert.That(await Dom0.ReadAsync("/e"), Is.EqualTo(string.Empty));
    }

    [Test]
    public async Task Mkdir_IsIdempotent_AndKeepsValue()
    {
        await Dom0.WriteAsync("/m", "keep");
        await Dom0.MkdirAsync("/m");
        await Dom0.MkdirAsync("/m/n/o");

        Assert.That(await Dom0.ReadAsync("/m"), Is.EqualTo("keep"));
        Assert.That(await Dom0.ReadAsync("/m/n/o"), Is.EqualTo(string.Empty));
    }

    [Test]
    public async Task Remove_IsRecursive()
    {
        await Dom0.WriteAsync("/r/a/b", "1");
        await Dom0.WriteAsync("/r/c", "2");

        await Dom0.RemoveAsync("/r");

        Assert.That(await Dom0.ReadAsync("/r/a/b"), Is.Null);
        Assert.That(await Dom0.DirectoryAsync("/r"), Is.Empty);
    }

    [Test]
    public async Task Remove_MissingNode_Succeeds()
    {
        await Dom0.MkdirAsync("/p");

        Assert.That(async () => await Dom0.RemoveAsync("/p/missing"), Throws.Nothing);
    }

    [Test]
    public async Task Remove_MissingParent_FailsWithEnoent()
    {
        var ex = Assert.ThrowsAsync<XenStoreException>(async () => await Dom0.RemoveAsync("/nope/child"));

        Assert.That(ex!.ErrorName, Is.EqualTo("ENOENT"));
        Assert.That(ex.Errno, Is.EqualTo(2));
        Assert.That(ex.Path, Is.EqualTo("/nope/child"));
        Assert.That(ex.Message, Does.Contain("RM").And.Contain("/nope/child").And.Contain("ENOENT"));
    }

    [Test]
    public async Task Directory_ListsChildren_AndMissingIsEmpty()
    {
        await Dom0.WriteAsync("/d/b", "");
        await Dom0.WriteAsync("/d/a", "");

        Assert.That(await Dom0.DirectoryAsync("/d"), Is.EquivalentTo(new List<string> { "a", "b" }));
        Assert.That(await Dom0.DirectoryAsync("/d/a"), Is.Empty);
        Assert.That(await Dom0.DirectoryAsync("/missing"), Is.Empty);
    }

    [Test]
    public async Task Permissions_RoundTrip()
    {
        await Dom0.MkdirAsync("/perm");
        await Dom0.SetPermissionsAsync("/perm", Perms("n0", "r1", "b2"));

        Assert.That(await Dom0.GetPermissionsAsync("/perm"), Is.EqualTo(Perms("n0", "r1", "b2")));
    }

    [Test]
    public async Task NewNode_InheritsParentPermissions()
    {
        await Dom0.MkdirAsync("/inh");
        await Dom0.SetPermissionsAsync("/inh", Perms("n0", "r1"));
        await Dom0.WriteAsync("/inh/child/leaf", "v");

        Assert.That(await Dom0.GetPermissionsAsync("/inh/child/leaf"), Is.EqualTo(Perms("n0", "r1")));
    }

    [Test]
    public async Task GetPermissions_MissingNode_FailsWithEnoent()
    {
        var ex = Assert.ThrowsAsync<XenStoreException>(async () => await Dom0.GetPermissionsAsync("/missing"));

        Assert.That(ex!.ErrorName, Is.EqualTo("ENOENT"));
    }

    [Test]
    public async Task GetDomainPath_ReturnsLocalDomainPath() =>
        Assert.That(await Dom0.GetDomainPathAsync(new DomId(7)), Is.EqualTo("/local/domain/7"));

    [Test]
    public async Task IsDomainIntroduced_FollowsIntroduceAndRelease()
    {
        Assert.That(await Dom0.IsDomainIntroducedAsync(DomId.Dom0), Is.True);
        Assert.That(await Dom0.IsDomainIntroducedAsync(new DomId(3)), Is.False);

        Server.IntroduceDomain(new DomId(3));
        Assert.That(await Dom0.IsDomainIntroducedAsync(new DomId(3)), Is.True);

        Server.ReleaseDomain(new DomId(3));
        Assert.That(await Dom0.IsDomainIntroducedAsync(new DomId(3)), Is.False);
    }

    [TestCase("/bad path")]
    [TestCase("/trailing/")]
    [TestCase("//double")]
    [TestCase("@introduceDomain")]
    public void InvalidPath_IsRejectedWithEinval(string path)
    {
        var ex = Assert.ThrowsAsync<XenStoreException>(async () => await Dom0.WriteAsync(path, "v"));

        Assert.That(ex!.ErrorName, Is.EqualTo("EINVAL"));
    }

    [Test]
    public void OversizedRequest_IsRejectedLocallyWithE2big()
    {
        var ex = Assert.ThrowsAsync<XenStoreException>(async () => await Dom0.WriteAsync("/big", new string('x', XsCodec.PayloadMax)));

        Assert.That(ex!.ErrorName, Is.EqualTo("E2BIG"));
        Assert.That(Dom0.Completion.IsCompleted, Is.False);
    }

    [Test]
    public async Task LargestRequest_IsAccepted()
    {
        string value = new('x', XsCodec.PayloadMax - "/big".Length - 1);

        await Dom0.WriteAsync("/big", value);

        Assert.That(await Dom0.ReadAsync("/big"), Is.EqualTo(value));
    }

    [Test]
    public async Task ConcurrentRequests_AreMatchedByReqId()
    {
        Task[] writes = [.. Enumerable.Range(0, 50).Select(i => Dom0.WriteAsync($"/c/n{i}", i.ToString(System.Globalization.CultureInfo.InvariantCulture)))];
        await Task.WhenAll(writes);

        Task<string?>[] reads = [.. Enumerable.Range(0, 50).Select(i => Dom0.ReadAsync($"/c/n{i}"))];
        string?[] values = await Task.WhenAll(reads);

        Assert.That(values, Is.EqualTo(Enumerable.Range(0, 50).Select(i => i.ToString(System.Globalization.CultureInfo.InvariantCulture))));
    }
}
