using System.Globalization;
using XenPvUsb.XenStore;

namespace XenPvUsb.Tests.XenStore;

[TestFixture]
public sealed class TransactionTests : XenStoreTestBase
{
    [Test]
    public async Task Commit_AppliesWrites()
    {
        await Dom0.TransactAsync(async tx =>
        {
            await Dom0.WriteAsync("/t/a", "1", tx);
            await Dom0.WriteAsync("/t/b", "2", tx);
        });

        Assert.That(await Dom0.ReadAsync("/t/a"), Is.EqualTo("1"));
        Assert.That(await Dom0.ReadAsync("/t/b"), Is.EqualTo("2"));
    }

    [Test]
    public async Task Reads_SeeSnapshotPlusOwnWrites()
    {
        await Dom0.WriteAsync("/s", "before");
        XenStoreConnection other = await ConnectDom0Async();
        XenStoreTransaction tx = await Dom0.StartTransactionAsync();

        await other.WriteAsync("/s", "outside");
        await Dom0.WriteAsync("/own", "mine", tx);

        Assert.That(await Dom0.ReadAsync("/s", tx), Is.EqualTo("before"));
        Assert.That(await Dom0.ReadAsync("/own", tx), Is.EqualTo("mine"));
        Assert.That(await Dom0.ReadAsync("/own"), Is.Null);
        await Dom0.EndTransactionAsync(tx, commit: false);
    }

    [Test]
    public async Task Conflict_FailsCommitWithEagain()
    {
        await Dom0.WriteAsync("/conf", "0");
        XenStoreConnection other = await ConnectDom0Async();
        XenStoreTransaction tx = await Dom0.StartTransactionAsync();
        await Dom0.ReadAsync("/conf", tx);
        await Dom0.WriteAsync("/conf2", "x", tx);

        await other.WriteAsync("/conf", "changed");
        var ex = Assert.ThrowsAsync<XenStoreException>(async () => await Dom0.EndTransactionAsync(tx, commit: true));

        Assert.That(ex!.ErrorName, Is.EqualTo("EAGAIN"));
        Assert.That(await Dom0.ReadAsync("/conf2"), Is.Null);
    }

    [Test]
    public async Task UnrelatedChange_DoesNotConflict()
    {
        await Dom0.WriteAsync("/u/a", "0");
        await Dom0.WriteAsync("/v", "0");
        XenStoreConnection other = await ConnectDom0Async();
        XenStoreTransaction tx = await Dom0.StartTransactionAsync();
        await Dom0.WriteAsync("/u/a", "1", tx);

        await other.WriteAsync("/v", "changed");
        await Dom0.EndTransactionAsync(tx, commit: true);

        Assert.That(await Dom0.ReadAsync("/u/a"), Is.EqualTo("1"));
    }

    [Test]
    public async Task TransactAsync_RetriesConflictToSuccess()
    {
        await Dom0.WriteAsync("/counter", "0");
        XenStoreConnection other = await ConnectDom0Async();
        int attempts = 0;

        int result = await Dom0.TransactAsync(async tx =>
        {
            attempts++;
            int value = int.Parse((await Dom0.ReadAsync("/counter", tx))!, CultureInfo.InvariantCulture);
            if (attempts == 1)
            {
                await other.WriteAsync("/counter", "10");
            }

            await Dom0.WriteAsync("/counter", (value + 1).ToString(CultureInfo.InvariantCulture), tx);
            return value + 1;
        });

        Assert.That(attempts, Is.EqualTo(2));
        Assert.That(result, Is.EqualTo(11));
        Assert.That(await Dom0.ReadAsync("/counter"), Is.EqualTo("11"));
    }

    [Test]
    public async Task TransactAsync_GivesUpAfterBoundedRetries()
    {
        XenStoreConnection other = await ConnectDom0Async();
        int attempts = 0;

        var ex = Assert.ThrowsAsync<XenStoreException>(async () => await Dom0.TransactAsync(async tx =>
        {
            attempts++;
            await Dom0.ReadAsync("/hot", tx);
            await other.WriteAsync("/hot", attempts.ToString(CultureInfo.InvariantCulture));
            await Dom0.WriteAsync("/hot", "mine", tx);
        }));

        Assert.That(ex!.ErrorName, Is.EqualTo("EAGAIN"));
        Assert.That(attempts, Is.EqualTo(20));
    }

    [Test]
    public async Task BodyThrows_AbortsAndDiscards()
    {
        Assert.ThrowsAsync<InvalidOperationException>(async () => await Dom0.TransactAsync(async tx =>
        {
            await Dom0.WriteAsync("/ab", "x", tx);
            throw new InvalidOperationException("boom");
        }));

        Assert.That(await Dom0.ReadAsync("/ab"), Is.Null);
    }

    [Test]
    public async Task EndFalse_DiscardsWrites()
    {
        XenStoreTransaction tx = await Dom0.StartTransactionAsync();
        await Dom0.WriteAsync("/disc", "x", tx);
        await Dom0.RemoveAsync("/local", tx);

        await Dom0.EndTransactionAsync(tx, commit: false);

        Assert.That(await Dom0.ReadAsync("/disc"), Is.Null);
        Assert.That(await Dom0.DirectoryAsync("/local"), Is.EqualTo(new List<string> { "domain" }));
    }

    [Test]
    public async Task ClosedConnection_DropsItsOpenTransactions()
    {
        XenStoreConnection other = await ConnectDom0Async();
        XenStoreTransaction tx = await other.StartTransactionAsync();
        await other.WriteAsync("/dead", "x", tx);

        await other.DisposeAsync();

        Assert.That(await Dom0.ReadAsync("/dead"), Is.Null);
    }

    [Test]
    public async Task TransactionOfAnotherConnection_IsRejected()
    {
        XenStoreConnection other = await ConnectDom0Async();
        XenStoreTransaction tx = await other.StartTransactionAsync();

        Assert.ThrowsAsync<ArgumentException>(async () => await Dom0.ReadAsync("/x", tx));
    }
}
