using XenPvUsb.XenStore;

namespace XenPvUsb.Tests.XenStore;

/// <summary>Server behaviour the real client never provokes, exercised with raw frames.</summary>
[TestFixture]
public sealed class ServerProtocolTests : XenStoreTestBase
{
    [Test]
    public async Task InvalidPath_RepliesErrorEinval_WithReqIdAndTxId()
    {
        await using RawXsClient raw = await RawXsClient.ConnectAsync(Dom0Socket);

        await raw.SendAsync(XsMessageType.Read, 77, XsCodec.EncodeStrings("/bad//path"));
        (XsWireHeader header, byte[] payload) = (await raw.ReceiveAsync())!.Value;

        Assert.That(header.Type, Is.EqualTo(XsMessageType.Error));
        Assert.That(header.ReqId, Is.EqualTo(77));
        Assert.That(XsCodec.DecodeString(payload), Is.EqualTo("EINVAL"));
    }

    [Test]
    public async Task UnknownType_RepliesEnosys()
    {
        await using RawXsClient raw = await RawXsClient.ConnectAsync(Dom0Socket);

        await raw.SendAsync(XsMessageType.GetQuota, 1, XsCodec.EncodeStrings(string.Empty));
        (XsWireHeader header, byte[] payload) = (await raw.ReceiveAsync())!.Value;

        Assert.That(header.Type, Is.EqualTo(XsMessageType.Error));
        Assert.That(XsCodec.DecodeString(payload), Is.EqualTo("ENOSYS"));
    }

    [Test]
    public async Task Reply_CarriesRequestTypeAndOk()
    {
        await using RawXsClient raw = await RawXsClient.ConnectAsync(Dom0Socket);

        await raw.SendAsync(XsMessageType.Write, 9, XsCodec.EncodePathAndValue("/w", "v"u8));
        (XsWireHeader header, byte[] payload) = (await raw.ReceiveAsync())!.Value;

        Assert.That(header, Is.EqualTo(new XsWireHeader(XsMessageType.Write, 9, 0, 3)));
        Assert.That(payload, Is.EqualTo("OK\0"u8.ToArray()));
    }

    [Test]
    public async Task OversizedPayload_KillsConnection()
    {
        await using RawXsClient raw = await RawXsClient.ConnectAsync(Dom0Socket);

        byte[] header = new byte[XsWireHeader.Size];
        new XsWireHeader(XsMessageType.Write, 1, 0, XsCodec.PayloadMax + 1).Write(header);
        await raw.SendRawAsync(header);

        Assert.That(await raw.ReceiveAsync(), Is.Null);
    }

    [Test]
    public async Task Unwatch_StopsEventsAtTheServer()
    {
        await using RawXsClient raw = await RawXsClient.ConnectAsync(Dom0Socket);
        await raw.SendAsync(XsMessageType.Watch, 1, XsCodec.EncodeStrings("/uw", "tok"));
        Assert.That((await raw.ReceiveAsync())!.Value.Header.Type, Is.EqualTo(XsMessageType.Watch));
        Assert.That((await raw.ReceiveAsync())!.Value.Header.Type, Is.EqualTo(XsMessageType.WatchEvent));

        await raw.SendAsync(XsMessageType.Unwatch, 2, XsCodec.EncodeStrings("/uw", "tok"));
        Assert.That((await raw.ReceiveAsync())!.Value.Header.Type, Is.EqualTo(XsMessageType.Unwatch));
        await Dom0.WriteAsync("/uw/x", "1");

        // Replies and events share one ordered stream: had the write fired, its event would come first.
        await raw.SendAsync(XsMessageType.Read, 3, XsCodec.EncodeStrings("/uw/x"));
        (XsWireHeader header, _) = (await raw.ReceiveAsync())!.Value;
        Assert.That(header.Type, Is.EqualTo(XsMessageType.Read));
    }

    [Test]
    public async Task TransactionEnd_UnknownTransaction_RepliesEnoent()
    {
        await using RawXsClient raw = await RawXsClient.ConnectAsync(Dom0Socket);

        await raw.SendAsync(XsMessageType.TransactionEnd, 1, XsCodec.EncodeStrings("T"), txId: 999);
        (XsWireHeader header, byte[] payload) = (await raw.ReceiveAsync())!.Value;

        Assert.That(header.TxId, Is.EqualTo(999));
        Assert.That(XsCodec.DecodeString(payload), Is.EqualTo("ENOENT"));
    }
}
