namespace XenPvUsb.XenStore;

/// <summary>An open xenstore transaction: the tx_id put in the header of the requests made inside it.</summary>
public sealed class XenStoreTransaction
{
    internal XenStoreTransaction(XenStoreConnection connection, uint id)
    {
        Connection = connection;
        Id = id;
    }

    public uint Id { get; }

    internal XenStoreConnection Connection { get; }

    public override string ToString() => $"tx {Id}";
}
