using System.Globalization;
using XenPvUsb.Xen;
using XenPvUsb.XenStore;

namespace XenPvUsb.Simulation.XenStore;

public sealed partial class SimulatedXenStored
{
    // Called with _lock held.
    private void HandleRequest(SimConnection connection, XsWireHeader header, byte[] payload)
    {
        try
        {
            byte[] reply = Execute(connection, header, payload);
            Send(connection, header.Type, header, reply);
        }
        catch (SimXsError error)
        {
            // Errors: type ERROR, req_id/tx_id copied, payload = errno name + NUL (§4.1).
            Send(connection, XsMessageType.Error, header, XsCodec.EncodeStrings(error.Name));
        }

        if (header.Type == XsMessageType.Watch && _pendingRegistrationEvent is { } registration)
        {
            // xenstored fires a new watch once, right after the OK.
            _pendingRegistrationEvent = null;
            SendEvent(connection, registration.Path, registration.Token);
        }
    }

    private byte[] Execute(SimConnection connection, XsWireHeader header, byte[] payload)
    {
        SimCaller caller = connection.Caller;
        switch (header.Type)
        {
            case XsMessageType.Read:
                {
                    (SimStore store, _) = StoreFor(connection, header);
                    return store.Read(caller, NodePath(connection, SinglePath(payload)));
                }

            case XsMessageType.Directory:
                {
                    (SimStore store, _) = StoreFor(connection, header);
                    return XsCodec.EncodeStrings([.. store.Directory(caller, NodePath(connection, SinglePath(payload)))]);
                }

            case XsMessageType.GetPerms:
                {
                    (SimStore store, _) = StoreFor(connection, header);
                    XsPermission[] permissions = store.GetPermissions(caller, NodePath(connection, SinglePath(payload)));
                    return XsCodec.EncodeStrings([.. permissions.Select(p => p.ToString())]);
                }

            case XsMessageType.Write:
                {
                    if (!XsCodec.TrySplitFirst(payload, out string rawPath, out ReadOnlySpan<byte> valueSpan))
                    {
                        throw new SimXsError("EINVAL");
                    }

                    string path = NodePath(connection, rawPath);
                    byte[] value = valueSpan.ToArray();
                    Mutate(connection, header, store => store.Write(caller, path, value));
                    return Ok;
                }

            case XsMessageType.Mkdir:
                {
                    string path = NodePath(connection, SinglePath(payload));
                    Mutate(connection, header, store => store.Mkdir(caller, path));
                    return Ok;
                }

            case XsMessageType.Rm:
                {
                    string path = NodePath(connection, SinglePath(payload));
                    Mutate(connection, header, store => store.Remove(caller, path));
                    return Ok;
                }

            case XsMessageType.SetPerms:
                {
                    List<string> parts = XsCodec.DecodeStrings(payload);
                    if (parts.Count < 2)
                    {
                        throw new SimXsError("EINVAL");
                    }

                    string path = NodePath(connection, parts[0]);
                    var permissions = new XsPermission[parts.Count - 1];
                    for (int i = 1; i < parts.Count; i++)
                    {
                        if (!XsPermission.TryParse(parts[i], out permissions[i - 1]))
                        {
                            throw new SimXsError("EINVAL");
                        }
                    }

                    Mutate(connection, header, store => store.SetPermissions(caller, path, permissions));
                    return Ok;
                }

            case XsMessageType.Watch:
                return Watch(connection, payload);

            case XsMessageType.Unwatch:
                return Unwatch(connection, payload);

            case XsMessageType.TransactionStart:
                {
                    if (header.TxId != 0)
                    {
                        throw new SimXsError("EBUSY");
                    }

                    uint id = ++_nextTransactionId;
                    connection.Transactions.Add(id, new SimTransaction(id, _store.Snapshot()));
                    return XsCodec.EncodeStrings(id.ToString(CultureInfo.InvariantCulture));
                }

            case XsMessageType.TransactionEnd:
                return EndTransaction(connection, header, payload);

            case XsMessageType.GetDomainPath:
                return XsCodec.EncodeStrings("/local/domain/" + ParseDomId(payload).ToString());

            case XsMessageType.IsDomainIntroduced:
                return XsCodec.EncodeStrings(_introduced.Contains(ParseDomId(payload)) ? "T" : "F");

            case XsMessageType.Introduce:
                RequirePrivileged(caller);
                IntroduceLocked(ParseDomId(payload));
                return Ok;

            case XsMessageType.Release:
                RequirePrivileged(caller);
                ReleaseLocked(ParseDomId(payload));
                return Ok;

            case XsMessageType.ResetWatches:
                connection.Watches.Clear();
                connection.Transactions.Clear();
                return Ok;

            default:
                throw new SimXsError("ENOSYS");
        }
    }

    private static byte[] Ok => XsCodec.EncodeStrings("OK");

    /// <summary>The store a request runs against: the live tree, or its transaction's snapshot (unknown tx_id: ENOENT).</summary>
    private (SimStore Store, SimTransaction? Transaction) StoreFor(SimConnection connection, XsWireHeader header)
    {
        if (header.TxId == 0)
        {
            return (_store, null);
        }

        return connection.Transactions.TryGetValue(header.TxId, out SimTransaction? transaction)
            ? (transaction.Snapshot, transaction)
            : throw new SimXsError("ENOENT");
    }

    private void Mutate(SimConnection connection, XsWireHeader header, Action<SimStore> change)
    {
        (SimStore store, SimTransaction? transaction) = StoreFor(connection, header);
        change(store);
        transaction?.Changes.Add(change);
    }

    private byte[] EndTransaction(SimConnection connection, XsWireHeader header, byte[] payload)
    {
        string verdict = XsCodec.DecodeString(payload);
        if (payload.Length != 2 || verdict is not ("T" or "F"))
        {
            throw new SimXsError("EINVAL");
        }

        if (!connection.Transactions.Remove(header.TxId, out SimTransaction? transaction))
        {
            throw new SimXsError("ENOENT");
        }

        if (verdict == "F")
        {
            return Ok;
        }

        if (transaction.ConflictsWith(_store))
        {
            throw new SimXsError("EAGAIN");
        }

        // Nothing the transaction depended on changed, so replaying its changes on the live tree reproduces the
        // snapshot's result, and fires the watches now, at commit.
        foreach (Action<SimStore> change in transaction.Changes)
        {
            try
            {
                change(_store);
            }
            catch (SimXsError)
            {
            }
        }

        return Ok;
    }

    private static void RequirePrivileged(SimCaller caller)
    {
        if (!caller.Privileged)
        {
            throw new SimXsError("EACCES");
        }
    }

    private static string SinglePath(byte[] payload)
    {
        List<string> parts = XsCodec.DecodeStrings(payload);
        return parts.Count >= 1 ? parts[0] : throw new SimXsError("EINVAL");
    }

    /// <summary>Validates a node path (§4.1) and resolves a relative one against the connection's domain path.</summary>
    private static string NodePath(SimConnection connection, string path)
    {
        if (!XenStorePath.IsValid(path))
        {
            throw new SimXsError("EINVAL");
        }

        return XenStorePath.IsAbsolute(path) ? path : connection.DomainPath + "/" + path;
    }

    private static DomId ParseDomId(byte[] payload)
    {
        List<string> parts = XsCodec.DecodeStrings(payload);
        return parts.Count >= 1 && ushort.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out ushort value)
            ? new DomId(value)
            : throw new SimXsError("EINVAL");
    }

    private static void Send(SimConnection connection, XsMessageType type, XsWireHeader request, byte[] payload) =>
        connection.Enqueue(XsCodec.EncodeMessage(type, request.ReqId, request.TxId, payload));
}
