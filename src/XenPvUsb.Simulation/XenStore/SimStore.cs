using XenPvUsb.Xen;
using XenPvUsb.XenStore;

namespace XenPvUsb.Simulation.XenStore;

/// <summary>
/// The node tree and its operations, with xenstored's permission rules. The live store reports every change to
/// <see cref="Changed"/>; a transaction's snapshot store instead records the generation of every node it touches
/// (first touch, before its own change) so the commit can detect conflicting changes. Not thread-safe: the server
/// holds its one lock around every call.
/// </summary>
internal sealed class SimStore
{
    private long _generation;

    public SimStore()
    {
        Root = new SimNode([], [new XsPermission(XsAccess.None, DomId.Dom0)], 0);
    }

    private SimStore(SimNode root, long generation, bool recordTouches)
    {
        Root = root;
        _generation = generation;
        Touched = recordTouches ? new Dictionary<string, long>(StringComparer.Ordinal) : null;
    }

    public SimNode Root { get; }

    /// <summary>Path → generation at first touch (-1: absent). Only on transaction snapshots.</summary>
    public Dictionary<string, long>? Touched { get; }

    /// <summary>Change notification: absolute path, the node's permissions, and whether it was a recursive removal.</summary>
    public Action<string, XsPermission[], bool>? Changed { get; set; }

    public SimStore Snapshot() => new(Root.Clone(), _generation, recordTouches: true);

    public long GenerationOf(string path) => Find(path)?.Generation ?? -1;

    public static bool CanRead(SimCaller caller, XsPermission[] permissions) => Access(caller, permissions) is XsAccess.Read or XsAccess.Both;

    public static bool CanWrite(SimCaller caller, XsPermission[] permissions) => Access(caller, permissions) is XsAccess.Write or XsAccess.Both;

    private static XsAccess Access(SimCaller caller, XsPermission[] permissions)
    {
        if (caller.Privileged || permissions[0].Domain == caller.Domain)
        {
            return XsAccess.Both;
        }

        for (int i = 1; i < permissions.Length; i++)
        {
            if (permissions[i].Domain == caller.Domain)
            {
                return permissions[i].Access;
            }
        }

        return permissions[0].Access;
    }

    public byte[] Read(SimCaller caller, string path)
    {
        SimNode node = Get(caller, path);
        RequireRead(caller, node);
        return node.Value;
    }

    public IEnumerable<string> Directory(SimCaller caller, string path)
    {
        SimNode node = Get(caller, path);
        RequireRead(caller, node);
        return [.. node.Children.Keys];
    }

    public XsPermission[] GetPermissions(SimCaller caller, string path)
    {
        SimNode node = Get(caller, path);
        RequireRead(caller, node);
        return node.Permissions;
    }

    public void Write(SimCaller caller, string path, byte[] value)
    {
        SimNode? node = Lookup(path);
        if (node is not null)
        {
            RequireWrite(caller, node);
            node.Value = value;
            node.Generation = ++_generation;
        }
        else
        {
            node = Create(caller, path);
            node.Value = value;
        }

        Changed?.Invoke(path, node.Permissions, false);
    }

    public void Mkdir(SimCaller caller, string path)
    {
        if (Lookup(path) is not null)
        {
            return;
        }

        SimNode node = Create(caller, path);
        Changed?.Invoke(path, node.Permissions, false);
    }

    public void Remove(SimCaller caller, string path)
    {
        if (path == "/")
        {
            throw new SimXsError("EINVAL");
        }

        SimNode? node = Lookup(path);
        string parentPath = XenStorePath.Parent(path);
        if (node is null)
        {
            // Absent node: fine. Absent parent: ENOENT (docs/misc/xenstore.txt RM).
            if (Lookup(parentPath) is null)
            {
                throw new SimXsError(NotFoundError(caller, parentPath));
            }

            return;
        }

        RequireWrite(caller, node);
        SimNode parent = Lookup(parentPath)!;
        TouchSubtree(path, node);
        parent.Children.Remove(LastSegment(path));
        parent.Generation = ++_generation;
        Changed?.Invoke(path, node.Permissions, true);
    }

    public void SetPermissions(SimCaller caller, string path, XsPermission[] permissions)
    {
        SimNode node = Get(caller, path);
        if (!caller.Privileged)
        {
            if (node.Permissions[0].Domain != caller.Domain)
            {
                throw new SimXsError("EACCES");
            }

            if (permissions[0].Domain != node.Permissions[0].Domain)
            {
                // Only the control domain may hand a node to another owner.
                throw new SimXsError("EPERM");
            }
        }

        node.Permissions = permissions;
        node.Generation = ++_generation;
        Changed?.Invoke(path, permissions, false);
    }

    /// <summary>Creates <paramref name="path"/> and missing parents; write access is needed on the nearest existing ancestor.</summary>
    private SimNode Create(SimCaller caller, string path)
    {
        var missing = new Stack<string>();
        string current = path;
        SimNode? ancestor;
        while ((ancestor = Lookup(current)) is null)
        {
            missing.Push(current);
            current = XenStorePath.Parent(current);
        }

        RequireWrite(caller, ancestor);
        SimNode parent = ancestor;
        parent.Generation = ++_generation;
        while (missing.Count > 0)
        {
            string childPath = missing.Pop();
            XsPermission[] permissions = (XsPermission[])parent.Permissions.Clone();
            if (!caller.Privileged)
            {
                // Unprivileged domains own what they create (xenstored construct_node).
                permissions[0] = permissions[0] with { Domain = caller.Domain };
            }

            var child = new SimNode([], permissions, ++_generation);
            parent.Children.Add(LastSegment(childPath), child);
            parent = child;
        }

        return parent;
    }

    private SimNode Get(SimCaller caller, string path) =>
        Lookup(path) ?? throw new SimXsError(NotFoundError(caller, path));

    /// <summary>
    /// A missing node reads as ENOENT, unless an unprivileged caller could not read the nearest existing ancestor:
    /// then EACCES, so existence does not leak.
    /// </summary>
    private string NotFoundError(SimCaller caller, string path)
    {
        SimNode? ancestor = null;
        while (path != "/" && (ancestor = Find(path)) is null)
        {
            path = XenStorePath.Parent(path);
        }

        ancestor ??= Root;
        return CanRead(caller, ancestor.Permissions) ? "ENOENT" : "EACCES";
    }

    private static void RequireRead(SimCaller caller, SimNode node)
    {
        if (!CanRead(caller, node.Permissions))
        {
            throw new SimXsError("EACCES");
        }
    }

    private static void RequireWrite(SimCaller caller, SimNode node)
    {
        if (!CanWrite(caller, node.Permissions))
        {
            throw new SimXsError("EACCES");
        }
    }

    /// <summary>Finds a node and records the touch for transaction conflict detection.</summary>
    private SimNode? Lookup(string path)
    {
        SimNode? node = Find(path);
        Touched?.TryAdd(path, node?.Generation ?? -1);
        return node;
    }

    private void TouchSubtree(string path, SimNode node)
    {
        if (Touched is null)
        {
            return;
        }

        Touched.TryAdd(path, node.Generation);
        foreach (KeyValuePair<string, SimNode> child in node.Children)
        {
            TouchSubtree(XenStorePath.Combine(path, child.Key), child.Value);
        }
    }

    private SimNode? Find(string path)
    {
        SimNode node = Root;
        if (path == "/")
        {
            return node;
        }

        foreach (string segment in path.AsSpan(1).ToString().Split('/'))
        {
            if (!node.Children.TryGetValue(segment, out SimNode? child))
            {
                return null;
            }

            node = child;
        }

        return node;
    }

    private static string LastSegment(string path) => path[(path.LastIndexOf('/') + 1)..];
}
