using XenPvUsb.XenStore;

namespace XenPvUsb.Tests.XenStore;

/// <summary>Connection death and desync handling, against a scripted peer.</summary>
[TestFixture]
public sealed class ConnectionLifecycleTests
{
    private static readonly TimeSpan s_timeout = TimeSpan.FromSeconds(5);

    private string _tempDir = null!;
    private FakeXenStoredPeer _peer = null!;
    private XenStoreConnection _connection = null!;

    [SetUp]
    public async Task SetUp()
    {
        _tempDir = Path.Combine(Path.GetTempPath(), "xsl-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(_tempDir);
        string path = Path.Combine(_tempDir, "peer.sock");
        _peer = new FakeXenStoredPeer(path);
        Task accept = _peer.AcceptAsync();
        _connection = await XenStoreConnection.ConnectAsync(path);
        await accept;
    }

    [TearDown]
    public async Task TearDown()
    {
        await _connection.DisposeAsync();
        await _peer.DisposeAsync();
        Directory.Delete(_tempDir, recursive: true);
    }

    [Test]
    public async Task PeerClose_FailsPendingCallsAndCompletesWatches()
    {
        Task<XenStoreWatch> watchTask = _connection.WatchAsync("/w");
        XsWireHeader watchRequest = await _peer.ReceiveRequestAsync();
        await _peer.SendAsync(XsCodec.EncodeMessage(XsMessageType.Watch, watchRequest.ReqId, 0, XsCodec.EncodeStrings("OK")));
        XenStoreWatch watch = await watchTask;
        Task<string?> read = _connection.ReadAsync("/a");
        await _peer.ReceiveRequestAsync();

        _peer.Close();

        Assert.That(async () => await read.WaitAsync(s_timeout), Throws.InstanceOf<XenStoreConnectionClosedException>());
        Assert.That(async () => await _connection.Completion.WaitAsync(s_timeout), Throws.InstanceOf<XenStoreConnectionClosedException>());
        await watch.Events.Completion.WaitAsync(s_timeout);
        Assert.That(watch.Events.Completion.IsCompletedSuccessfully, Is.True);
    }

    [Test]
    public async Task ReplyWithUnknownReqId_KillsConnection()
    {
        Task<string?> read = _connection.ReadAsync("/a");
        XsWireHeader request = await _peer.ReceiveRequestAsync();

        await _peer.SendAsync(XsCodec.EncodeMessage(XsMessageType.Read, request.ReqId + 100, 0, "v"u8));

        Assert.That(async () => await read.WaitAsync(s_timeout), Throws.InstanceOf<XenStoreConnectionClosedException>());
        Assert.That(async () => await _connection.Completion.WaitAsync(s_timeout), Throws.InstanceOf<InvalidDataException>());
    }

    [Test]
    public async Task ReplyOfWrongType_KillsConnection()
    {
        Task<string?> read = _connection.ReadAsync("/a");
        XsWireHeader request = await _peer.ReceiveRequestAsync();

        await _peer.SendAsync(XsCodec.EncodeMessage(XsMessageType.Directory, request.ReqId, 0, "v"u8));

        Assert.That(async () => await read.WaitAsync(s_timeout), Throws.InstanceOf<XenStoreConnectionClosedException>());
    }

    [Test]
    public async Task OversizedFrame_KillsConnection()
    {
        Task<string?> read = _connection.ReadAsync("/a");
        XsWireHeader request = await _peer.ReceiveRequestAsync();
        byte[] header = new byte[XsWireHeader.Size];
        new XsWireHeader(XsMessageType.Read, request.ReqId, 0, 100_000).Write(header);

        await _peer.SendAsync(header);

        Assert.That(async () => await read.WaitAsync(s_timeout), Throws.InstanceOf<XenStoreConnectionClosedException>());
        Assert.That(async () => await _connection.Completion.WaitAsync(s_timeout), Throws.InstanceOf<InvalidDataException>());
    }

    [Test]
    public async Task ReplySplitAcrossWrites_IsReassembled()
    {
        Task<string?> read = _connection.ReadAsync("/a");
        XsWireHeader request = await _peer.ReceiveRequestAsync();
        byte[] reply = XsCodec.EncodeMessage(XsMessageType.Read, request.ReqId, 0, "value"u8);

        await _peer.SendAsync(reply[..7]);
        await _peer.SendAsync(reply[7..]);

        Assert.That(await read, Is.EqualTo("value"));
    }

    [Test]
    public async Task CancelledCall_LeavesConnectionUsable()
    {
        using var cts = new CancellationTokenSource();
        Task<string?> first = _connection.ReadAsync("/a", cancellationToken: cts.Token);
        XsWireHeader firstRequest = await _peer.ReceiveRequestAsync();
        await cts.CancelAsync();
        Assert.That(async () => await first, Throws.InstanceOf<OperationCanceledException>());

        Task<string?> second = _connection.ReadAsync("/b");
        XsWireHeader secondRequest = await _peer.ReceiveRequestAsync();
        await _peer.SendAsync(XsCodec.EncodeMessage(XsMessageType.Read, firstRequest.ReqId, 0, "late"u8));
        await _peer.SendAsync(XsCodec.EncodeMessage(XsMessageType.Read, secondRequest.ReqId, 0, "b"u8));

        Assert.That(await second, Is.EqualTo("b"));
        Assert.That(_connection.Completion.IsCompleted, Is.False);
    }

    [Test]
    public async Task ErrorReply_BecomesXenStoreException()
    {
        Task write = _connection.WriteAsync("/a", "v");
        XsWireHeader request = await _peer.ReceiveRequestAsync();

        await _peer.SendAsync(XsCodec.EncodeMessage(XsMessageType.Error, request.ReqId, 0, XsCodec.EncodeStrings("EACCES")));

        var ex = Assert.ThrowsAsync<XenStoreException>(async () => await write.WaitAsync(s_timeout));
        Assert.That(ex!.ErrorName, Is.EqualTo("EACCES"));
        Assert.That(ex.Message, Does.Contain("WRITE").And.Contain("/a"));
    }

    [Test]
    public async Task Dispose_CompletesCleanly_AndLaterCallsFail()
    {
        Task<string?> pending = _connection.ReadAsync("/a");
        await _peer.ReceiveRequestAsync();

        await _connection.DisposeAsync();

        Assert.That(async () => await pending.WaitAsync(s_timeout), Throws.InstanceOf<XenStoreConnectionClosedException>());
        Assert.That(_connection.Completion.IsCompletedSuccessfully, Is.True);
        Assert.That(async () => await _connection.ReadAsync("/a"), Throws.InstanceOf<XenStoreConnectionClosedException>());
    }
}
