namespace XenPvUsb.Simulation.XenStore;

/// <summary>
/// An open transaction: a private snapshot of the whole tree (requests in the transaction see the snapshot plus
/// their own changes) and the list of its changes, replayed on the live tree at commit so watches fire then.
/// </summary>
internal sealed class SimTransaction(uint id, SimStore snapshot)
{
    public uint Id { get; } = id;

    public SimStore Snapshot { get; } = snapshot;

    public List<Action<SimStore>> Changes { get; } = [];

    /// <summary>True if any node this transaction read or wrote has changed in <paramref name="live"/> since the snapshot.</summary>
    public bool ConflictsWith(SimStore live)
    {
        foreach (KeyValuePair<string, long> touched in Snapshot.Touched!)
        {
            if (live.GenerationOf(touched.Key) != touched.Value)
            {
                return true;
            }
        }

        return false;
    }
}
