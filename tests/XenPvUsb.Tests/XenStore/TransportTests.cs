using System.Diagnostics;
using XenPvUsb.XenStore;

namespace XenPvUsb.Tests.XenStore;

[TestFixture]
public sealed class TransportTests : XenStoreTestBase
{
    [Test]
    public async Task OpenDefault_UsesXenstoredPathSocket()
    {
        string? saved = Environment.GetEnvironmentVariable("XENSTORED_PATH");
        Environment.SetEnvironmentVariable("XENSTORED_PATH", Dom0Socket);
        try
        {
            await using XenStoreConnection connection = await XenStoreConnection.OpenDefaultAsync();
            await connection.WriteAsync("/od", "1");

            Assert.That(await Dom0.ReadAsync("/od"), Is.EqualTo("1"));
            Assert.That(connection.MaxPayload, Is.EqualTo(XsCodec.PayloadMax));
        }
        finally
        {
            Environment.SetEnvironmentVariable("XENSTORED_PATH", saved);
        }
    }

    /// <summary>
    /// A FIFO opened read-write echoes what is written, so a request comes back as its own "reply": enough to drive
    /// the xenbus device transport (poll thread, reads, writes, eventfd shutdown) without Xen.
    /// </summary>
    [Test]
    public async Task XenbusTransport_OverFifo_RoundTripsAndShutsDown()
    {
        string fifo = Path.Combine(TempDir, "xenbus");
        using (Process mkfifo = Process.Start("mkfifo", fifo))
        {
            await mkfifo.WaitForExitAsync();
            Assume.That(mkfifo.ExitCode, Is.EqualTo(0));
        }

        string? saved = Environment.GetEnvironmentVariable("XENSTORED_PATH");
        Environment.SetEnvironmentVariable("XENSTORED_PATH", fifo);
        try
        {
            await using XenStoreConnection connection = await XenStoreConnection.OpenDefaultAsync();

            Assert.That(connection.MaxPayload, Is.EqualTo(XsCodec.PayloadMax - XsWireHeader.Size));
            Assert.That(await connection.ReadAsync("/echo").WaitAsync(Timeout), Is.EqualTo("/echo\0"));
            var ex = Assert.ThrowsAsync<XenStoreException>(async () => await connection.WriteAsync("/big", new string('x', 4080)));
            Assert.That(ex!.ErrorName, Is.EqualTo("E2BIG"));
        }
        finally
        {
            Environment.SetEnvironmentVariable("XENSTORED_PATH", saved);
        }
    }
}
