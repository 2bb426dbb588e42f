using System.Globalization;
using System.Text;
using XenPvUsb.Xen;

namespace XenPvUsb.XenStore;

public sealed partial class XenStoreConnection
{
    /// <summary>READ: the node's value, or null if it does not exist (ENOENT).</summary>
    public async Task<string?> ReadAsync(string path, XenStoreTransaction? transaction = null, CancellationToken cancellationToken = default)
    {
        CheckPath(XsMessageType.Read, path);
        try
        {
            // READ replies carry the raw value, no trailing NUL.
            byte[] reply = await RequestAsync(XsMessageType.Read, TxId(transaction), XsCodec.EncodeStrings(path), path, cancellationToken)
                .ConfigureAwait(false);
            return Encoding.UTF8.GetString(reply);
        }
        catch (XenStoreException ex) when (ex.ErrorName == "ENOENT")
        {
            return null;
        }
    }

    /// <summary>WRITE: sets the value, creating the node and any missing parents.</summary>
    public async Task WriteAsync(string path, string value, XenStoreTransaction? transaction = null, CancellationToken cancellationToken = default)
    {
        CheckPath(XsMessageType.Write, path);
        byte[] payload = XsCodec.EncodePathAndValue(path, Encoding.UTF8.GetBytes(value));
        await RequestAsync(XsMessageType.Write, TxId(transaction), payload, path, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>MKDIR: creates the node (and parents) if missing; an existing node is left alone.</summary>
    public async Task MkdirAsync(string path, XenStoreTransaction? transaction = null, CancellationToken cancellationToken = default)
    {
        CheckPath(XsMessageType.Mkdir, path);
        await RequestAsync(XsMessageType.Mkdir, TxId(transaction), XsCodec.EncodeStrings(path), path, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>RM: removes the node and its subtree. Not an error if the node is absent; ENOENT if its parent is.</summary>
    public async Task RemoveAsync(string path, XenStoreTransaction? transaction = null, CancellationToken cancellationToken = default)
    {
        CheckPath(XsMessageType.Rm, path);
        await RequestAsync(XsMessageType.Rm, TxId(transaction), XsCodec.EncodeStrings(path), path, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>DIRECTORY: the child names, or an empty list if the node does not exist.</summary>
    public async Task<IReadOnlyList<string>> DirectoryAsync(string path, XenStoreTransaction? transaction = null, CancellationToken cancellationToken = default)
    {
        CheckPath(XsMessageType.Directory, path);
        try
        {
            byte[] reply = await RequestAsync(XsMessageType.Directory, TxId(transaction), XsCodec.EncodeStrings(path), path, cancellationToken)
                .ConfigureAwait(false);
            List<string> children = XsCodec.DecodeStrings(reply);
            children.RemoveAll(static c => c.Length == 0);
            return children;
        }
        catch (XenStoreException ex) when (ex.ErrorName == "ENOENT")
        {
            return [];
        }
    }

    public async Task<IReadOnlyList<XsPermission>> GetPermissionsAsync(string path, XenStoreTransaction? transaction = null, CancellationToken cancellationToken = default)
    {
        CheckPath(XsMessageType.GetPerms, path, allowSpecial: true);
        byte[] reply = await RequestAsync(XsMessageType.GetPerms, TxId(transaction), XsCodec.EncodeStrings(path), path, cancellationToken)
            .ConfigureAwait(false);
        List<XsPermission> permissions = [];
        foreach (string entry in XsCodec.DecodeStrings(reply))
        {
            if (entry.Length == 0)
            {
                continue;
            }

            if (!XsPermission.TryParse(entry, out XsPermission permission))
            {
                throw new XenStoreException("GET_PERMS", "EINVAL", path);
            }

            permissions.Add(permission);
        }

        return permissions;
    }

    /// <summary>SET_PERMS: the first entry is the owner and the access of every domain not listed (§4.3).</summary>
    public async Task SetPermissionsAsync(string path, IReadOnlyList<XsPermission> permissions, XenStoreTransaction? transaction = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(permissions);
        if (permissions.Count == 0)
        {
            throw new ArgumentException("A node needs at least one permission entry (its owner).", nameof(permissions));
        }

        CheckPath(XsMessageType.SetPerms, path, allowSpecial: true);
        string[] parts = new string[permissions.Count + 1];
        parts[0] = path;
        for (int i = 0; i < permissions.Count; i++)
        {
            parts[i + 1] = permissions[i].ToString();
        }

        await RequestAsync(XsMessageType.SetPerms, TxId(transaction), XsCodec.EncodeStrings(parts), path, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>GET_DOMAIN_PATH: where the domain's own tree lives, <c>/local/domain/&lt;domid&gt;</c>.</summary>
    public async Task<string> GetDomainPathAsync(DomId domain, CancellationToken cancellationToken = default)
    {
        byte[] reply = await RequestAsync(XsMessageType.GetDomainPath, 0, XsCodec.EncodeStrings(DomIdText(domain)), null, cancellationToken)
            .ConfigureAwait(false);
        return XsCodec.DecodeString(reply);
    }

    /// <summary>IS_DOMAIN_INTRODUCED: whether xenstored knows the domain (false once it has been released).</summary>
    public async Task<bool> IsDomainIntroducedAsync(DomId domain, CancellationToken cancellationToken = default)
    {
        byte[] reply = await RequestAsync(XsMessageType.IsDomainIntroduced, 0, XsCodec.EncodeStrings(DomIdText(domain)), null, cancellationToken)
            .ConfigureAwait(false);
        return XsCodec.DecodeString(reply) == "T";
    }

    private static string DomIdText(DomId domain) => domain.Value.ToString(CultureInfo.InvariantCulture);

    private uint TxId(XenStoreTransaction? transaction)
    {
        if (transaction is null)
        {
            return 0;
        }

        if (transaction.Connection != this)
        {
            throw new ArgumentException("The transaction belongs to another xenstore connection.", nameof(transaction));
        }

        return transaction.Id;
    }

    private static void CheckPath(XsMessageType type, string path, bool allowSpecial = false)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!XenStorePath.IsValid(path, allowSpecial))
        {
            // xenstored would answer EINVAL; refusing locally keeps junk off the wire.
            throw new XenStoreException(OperationName(type), "EINVAL", path);
        }
    }
}
