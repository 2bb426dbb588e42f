namespace XenPvUsb.XenStore;

/// <summary>
/// A duplex byte stream carrying xenstore wire messages: the xenstored unix socket or the <c>/dev/xen/xenbus</c>
/// device. Framing is the connection's job; the transport only moves bytes.
/// </summary>
internal interface IXsTransport : IAsyncDisposable
{
    /// <summary>The largest request payload this transport can carry (4096 on the socket, 4080 via the device, §3.3).</summary>
    int MaxPayload { get; }

    /// <summary>Reads some bytes; 0 means the peer closed the stream.</summary>
    ValueTask<int> ReceiveAsync(Memory<byte> buffer, CancellationToken cancellationToken);

    /// <summary>Writes one whole message. Callers serialise calls.</summary>
    ValueTask SendAsync(ReadOnlyMemory<byte> message, CancellationToken cancellationToken);

    /// <summary>Stops the stream so a pending <see cref="ReceiveAsync"/> completes; idempotent, does not release resources.</summary>
    void Shutdown();
}
