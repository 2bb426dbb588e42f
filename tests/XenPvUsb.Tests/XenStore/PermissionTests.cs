using XenPvUsb.Xen;
using XenPvUsb.XenStore;

namespace XenPvUsb.Tests.XenStore;

[TestFixture]
public sealed class PermissionTests : XenStoreTestBase
{
    [Test]
    public async Task Guest_CannotReadDom0OnlyNode()
    {
        await Dom0.WriteAsync("/secret", "s");
        await Dom0.SetPermissionsAsync("/secret", Perms("n0"));
        XenStoreConnection guest = await ConnectGuestAsync();

        var ex = Assert.ThrowsAsync<XenStoreException>(async () => await guest.ReadAsync("/secret"));

        Assert.That(ex!.ErrorName, Is.EqualTo("EACCES"));
        Assert.That(ex.Errno, Is.EqualTo(13));
    }

    [Test]
    public async Task Guest_MissingNodeUnderUnreadableParent_IsEacces()
    {
        await Dom0.MkdirAsync("/hidden");
        await Dom0.SetPermissionsAsync("/hidden", Perms("n0"));
        XenStoreConnection guest = await ConnectGuestAsync();

        var ex = Assert.ThrowsAsync<XenStoreException>(async () => await guest.ReadAsync("/hidden/x"));

        Assert.That(ex!.ErrorName, Is.EqualTo("EACCES"));
    }

    [Test]
    public async Task Guest_CanWriteUnderNodeItOwns()
    {
        await Dom0.MkdirAsync("/local/domain/1");
        await Dom0.SetPermissionsAsync("/local/domain/1", Perms("n1"));
        XenStoreConnection guest = await ConnectGuestAsync();

        await guest.WriteAsync("/local/domain/1/device/vusb/0/state", "1");

        Assert.That(await Dom0.ReadAsync("/local/domain/1/device/vusb/0/state"), Is.EqualTo("1"));
        Assert.That((await Dom0.GetPermissionsAsync("/local/domain/1/device/vusb/0/state"))[0].Domain, Is.EqualTo(Guest));
    }

    [Test]
    public async Task Guest_RelativePaths_ResolveUnderItsDomainPath()
    {
        await Dom0.MkdirAsync("/local/domain/1");
        await Dom0.SetPermissionsAsync("/local/domain/1", Perms("n1"));
        XenStoreConnection guest = await ConnectGuestAsync();

        await guest.WriteAsync("data/x", "rel");

        Assert.That(await Dom0.ReadAsync("/local/domain/1/data/x"), Is.EqualTo("rel"));
        Assert.That(await guest.ReadAsync("data/x"), Is.EqualTo("rel"));
    }

    [Test]
    public async Task BackendPerms_LetGuestReadButNotWrite()
    {
        string dir = await CreateBackendDirAsync();
        await Dom0.WriteAsync(dir + "/num-ports", "8");
        XenStoreConnection guest = await ConnectGuestAsync();

        Assert.That(await guest.ReadAsync(dir + "/num-ports"), Is.EqualTo("8"));
        var ex = Assert.ThrowsAsync<XenStoreException>(async () => await guest.WriteAsync(dir + "/num-ports", "9"));
        Assert.That(ex!.ErrorName, Is.EqualTo("EACCES"));
        var create = Assert.ThrowsAsync<XenStoreException>(async () => await guest.WriteAsync(dir + "/new", "9"));
        Assert.That(create!.ErrorName, Is.EqualTo("EACCES"));
        var rm = Assert.ThrowsAsync<XenStoreException>(async () => await guest.RemoveAsync(dir + "/num-ports"));
        Assert.That(rm!.ErrorName, Is.EqualTo("EACCES"));
    }

    [Test]
    public async Task OtherGuest_CannotReadBackendDir()
    {
        string dir = await CreateBackendDirAsync();
        Server.Listen(new DomId(2), Path.Combine(TempDir, "dom2.sock"));
        await using XenStoreConnection guest2 = await XenStoreConnection.ConnectAsync(Path.Combine(TempDir, "dom2.sock"));

        var ex = Assert.ThrowsAsync<XenStoreException>(async () => await guest2.DirectoryAsync(dir));

        Assert.That(ex!.ErrorName, Is.EqualTo("EACCES"));
    }

    [Test]
    public async Task Guest_CannotSetPermissionsOnNodeItDoesNotOwn()
    {
        string dir = await CreateBackendDirAsync();
        XenStoreConnection guest = await ConnectGuestAsync();

        var ex = Assert.ThrowsAsync<XenStoreException>(async () => await guest.SetPermissionsAsync(dir, Perms("n0", "b1")));

        Assert.That(ex!.ErrorName, Is.EqualTo("EACCES"));
    }

    [Test]
    public async Task Owner_CanChangeAccessButNotOwner()
    {
        await Dom0.MkdirAsync("/owned");
        await Dom0.SetPermissionsAsync("/owned", Perms("n1"));
        XenStoreConnection guest = await ConnectGuestAsync();

        await guest.SetPermissionsAsync("/owned", Perms("n1", "r0", "r2"));
        var ex = Assert.ThrowsAsync<XenStoreException>(async () => await guest.SetPermissionsAsync("/owned", Perms("n2")));

        Assert.That(ex!.ErrorName, Is.EqualTo("EPERM"));
        Assert.That(await Dom0.GetPermissionsAsync("/owned"), Is.EqualTo(Perms("n1", "r0", "r2")));
    }

    [Test]
    public async Task Dom0_HasFullAccessEverywhere()
    {
        await Dom0.MkdirAsync("/guestonly");
        await Dom0.SetPermissionsAsync("/guestonly", Perms("n1"));

        await Dom0.WriteAsync("/guestonly/x", "dom0");
        await Dom0.SetPermissionsAsync("/guestonly", Perms("n2"));

        Assert.That(await Dom0.ReadAsync("/guestonly/x"), Is.EqualTo("dom0"));
    }

    [Test]
    public async Task Guest_IntroduceIsRefused()
    {
        XenStoreConnection guest = await ConnectGuestAsync();
        await using RawXsClient raw = await RawXsClient.ConnectAsync(GuestSocket);

        await raw.SendAsync(XsMessageType.Introduce, 1, XsCodec.EncodeStrings("5", "0", "0"));
        (XsWireHeader header, byte[] payload) = (await raw.ReceiveAsync())!.Value;

        Assert.That(header.Type, Is.EqualTo(XsMessageType.Error));
        Assert.That(XsCodec.DecodeString(payload), Is.EqualTo("EACCES"));
        Assert.That(await guest.IsDomainIntroducedAsync(new DomId(5)), Is.False);
    }
}
