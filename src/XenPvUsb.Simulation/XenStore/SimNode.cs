using XenPvUsb.XenStore;

namespace XenPvUsb.Simulation.XenStore;

internal sealed class SimNode
{
    public SimNode(byte[] value, XsPermission[] permissions, long generation)
    {
        Value = value;
        Permissions = permissions;
        Generation = generation;
    }

    public byte[] Value { get; set; }

    /// <summary>First entry: owner, and the access of every domain not listed (§4.3).</summary>
    public XsPermission[] Permissions { get; set; }

    /// <summary>Bumped on any change to the node (value, perms, child list); drives transaction conflict checks.</summary>
    public long Generation { get; set; }

    public SortedDictionary<string, SimNode> Children { get; } = new(StringComparer.Ordinal);

    public SimNode Clone()
    {
        var copy = new SimNode(Value, Permissions, Generation);
        foreach (KeyValuePair<string, SimNode> child in Children)
        {
            copy.Children.Add(child.Key, child.Value.Clone());
        }

        return copy;
    }
}
