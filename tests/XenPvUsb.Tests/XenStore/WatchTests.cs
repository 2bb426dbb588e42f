using XenPvUsb.Xen;
using XenPvUsb.XenStore;

namespace XenPvUsb.Tests.XenStore;

[TestFixture]
public sealed class WatchTests : XenStoreTestBase
{
    [Test]
    public async Task NewWatch_FiresOnceWithWatchedPath()
    {
        XenStoreWatch watch = await Dom0.WatchAsync("/w");

        Assert.That(await NextEventAsync(watch), Is.EqualTo("/w"));
        Assert.That(watch.Path, Is.EqualTo("/w"));
        Assert.That(watch.Events.TryRead(out _), Is.False);
    }

    [Test]
    public async Task Watch_FiresForNodeAndDescendants()
    {
        XenStoreWatch watch = await Registered(Dom0.WatchAsync("/w"));

        await Dom0.WriteAsync("/w", "1");
        await Dom0.WriteAsync("/w/a/b", "2");
        await Dom0.WriteAsync("/wx", "sibling, not a descendant");
        await Dom0.SetPermissionsAsync("/w/a", Perms("n0"));
        await Dom0.MkdirAsync("/w/m");

        Assert.That(await NextEventAsync(watch), Is.EqualTo("/w"));
        Assert.That(await NextEventAsync(watch), Is.EqualTo("/w/a/b"));
        Assert.That(await NextEventAsync(watch), Is.EqualTo("/w/a"));
        Assert.That(await NextEventAsync(watch), Is.EqualTo("/w/m"));
    }

    [Test]
    public async Task Remove_FiresDeleteEvents()
    {
        await Dom0.WriteAsync("/del/a/b", "1");
        XenStoreWatch parentWatch = await Registered(Dom0.WatchAsync("/del"));
        XenStoreWatch deepWatch = await Registered(Dom0.WatchAsync("/del/a/b"));

        await Dom0.RemoveAsync("/del/a");

        Assert.That(await NextEventAsync(parentWatch), Is.EqualTo("/del/a"));
        // Recursive removal of an ancestor reports the watched path (§4.4).
        Assert.That(await NextEventAsync(deepWatch), Is.EqualTo("/del/a/b"));
    }

    [Test]
    public async Task Unwatch_CompletesEventsAndStopsDelivery()
    {
        XenStoreWatch first = await Registered(Dom0.WatchAsync("/uw"));
        XenStoreWatch second = await Registered(Dom0.WatchAsync("/uw"));

        await first.DisposeAsync();
        await Dom0.WriteAsync("/uw/x", "1");

        Assert.That(await NextEventAsync(second), Is.EqualTo("/uw/x"));
        Assert.That(await CompletesAsync(first.Events), Is.True);
    }

    [Test]
    public async Task Guest_GetsNoEventForNodeItCannotRead()
    {
        string dir = await CreateBackendDirAsync();
        await Dom0.MkdirAsync(dir + "/secret");
        await Dom0.SetPermissionsAsync(dir + "/secret", Perms("n0"));
        XenStoreConnection guest = await ConnectGuestAsync();
        XenStoreWatch watch = await Registered(guest.WatchAsync(dir));

        await Dom0.WriteAsync(dir + "/secret", "hidden");
        await Dom0.WriteAsync(dir + "/public", "visible");

        // Events are delivered in order, so the unreadable change would have come first.
        Assert.That(await NextEventAsync(watch), Is.EqualTo(dir + "/public"));
    }

    [Test]
    public async Task TransactionChanges_FireAtCommit()
    {
        // Pre-created: creating a child changes the parent, which would (rightly) make the commit conflict.
        await Dom0.WriteAsync("/tw/outside", "0");
        XenStoreWatch watch = await Registered(Dom0.WatchAsync("/tw"));
        XenStoreTransaction tx = await Dom0.StartTransactionAsync();

        await Dom0.WriteAsync("/tw/in-tx", "1", tx);
        await Dom0.WriteAsync("/tw/outside", "2");
        Assert.That(await NextEventAsync(watch), Is.EqualTo("/tw/outside"));

        await Dom0.EndTransactionAsync(tx, commit: true);
        Assert.That(await NextEventAsync(watch), Is.EqualTo("/tw/in-tx"));
    }

    [Test]
    public async Task AbortedTransaction_FiresNothing()
    {
        XenStoreWatch watch = await Registered(Dom0.WatchAsync("/ta"));
        XenStoreTransaction tx = await Dom0.StartTransactionAsync();
        await Dom0.WriteAsync("/ta/in-tx", "1", tx);

        await Dom0.EndTransactionAsync(tx, commit: false);
        await Dom0.WriteAsync("/ta/after", "2");

        Assert.That(await NextEventAsync(watch), Is.EqualTo("/ta/after"));
    }

    [Test]
    public async Task GuestRelativeWatch_GetsRelativeEvents()
    {
        await Dom0.MkdirAsync("/local/domain/1");
        await Dom0.SetPermissionsAsync("/local/domain/1", Perms("n1"));
        XenStoreConnection guest = await ConnectGuestAsync();
        XenStoreWatch watch = await Registered(guest.WatchAsync("device/vusb"));

        await Dom0.WriteAsync("/local/domain/1/device/vusb/0/state", "3");

        Assert.That(await NextEventAsync(watch), Is.EqualTo("device/vusb/0/state"));
    }

    [Test]
    public async Task IntroduceAndRelease_FireSpecialWatches()
    {
        XenStoreWatch introduce = await Registered(Dom0.WatchAsync(XenStorePath.IntroduceDomain));
        XenStoreWatch release = await Registered(Dom0.WatchAsync(XenStorePath.ReleaseDomain));

        Server.IntroduceDomain(new DomId(4));
        Assert.That(await NextEventAsync(introduce), Is.EqualTo("@introduceDomain"));

        Server.ReleaseDomain(new DomId(4));
        Assert.That(await NextEventAsync(release), Is.EqualTo("@releaseDomain"));
        Assert.That(await Dom0.IsDomainIntroducedAsync(new DomId(4)), Is.False);
    }

    [Test]
    public async Task Guest_DoesNotReceiveSpecialWatchEvents()
    {
        await Dom0.MkdirAsync("/local/domain/1");
        await Dom0.SetPermissionsAsync("/local/domain/1", Perms("n1"));
        XenStoreConnection guest = await ConnectGuestAsync();
        XenStoreWatch special = await Registered(guest.WatchAsync(XenStorePath.IntroduceDomain));
        XenStoreWatch own = await Registered(guest.WatchAsync("data"));

        Server.IntroduceDomain(new DomId(4));
        await guest.WriteAsync("data", "x");

        Assert.That(await NextEventAsync(own), Is.EqualTo("data"));
        Assert.That(special.Events.TryRead(out _), Is.False);
    }

    [Test]
    public async Task ReleaseDomain_ClosesGuestConnections()
    {
        XenStoreConnection guest = await ConnectGuestAsync();
        XenStoreWatch watch = await Registered(guest.WatchAsync("/local"));
        Assert.That(Server.ConnectionCount, Is.EqualTo(2));

        Server.ReleaseDomain(Guest);

        Assert.That(async () => await guest.Completion.WaitAsync(Timeout), Throws.InstanceOf<XenStoreConnectionClosedException>());
        Assert.That(await CompletesAsync(watch.Events), Is.True);
        Assert.That(async () => await guest.ReadAsync("/local"), Throws.InstanceOf<XenStoreConnectionClosedException>());
    }

    [Test]
    public async Task EventsRouteByToken_ToTheRightWatch()
    {
        XenStoreWatch a = await Registered(Dom0.WatchAsync("/ra"));
        XenStoreWatch b = await Registered(Dom0.WatchAsync("/rb"));

        await Dom0.WriteAsync("/rb/1", "x");
        await Dom0.WriteAsync("/ra/1", "x");

        Assert.That(await NextEventAsync(b), Is.EqualTo("/rb/1"));
        Assert.That(await NextEventAsync(a), Is.EqualTo("/ra/1"));
    }
}
