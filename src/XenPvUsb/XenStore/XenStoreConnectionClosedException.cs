namespace XenPvUsb.XenStore;

/// <summary>The xenstore connection is gone (closed, peer hung up, or a protocol error killed it).</summary>
public sealed class XenStoreConnectionClosedException : Exception
{
    internal XenStoreConnectionClosedException(string message)
        : base(message)
    {
    }

    internal XenStoreConnectionClosedException(string message, Exception? innerException)
        : base(message, innerException)
    {
    }
}
