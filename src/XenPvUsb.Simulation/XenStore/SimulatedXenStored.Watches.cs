using XenPvUsb.XenStore;

namespace XenPvUsb.Simulation.XenStore;

public sealed partial class SimulatedXenStored
{
    private byte[] Watch(SimConnection connection, byte[] payload)
    {
        List<string> parts = XsCodec.DecodeStrings(payload);
        if (parts.Count < 2)
        {
            throw new SimXsError("EINVAL");
        }

        (string path, string token) = (parts[0], parts[1]);
        string absolute = WatchPath(connection, path);
        foreach (SimWatch existing in connection.Watches)
        {
            if (existing.Path == path && existing.Token == token)
            {
                throw new SimXsError("EEXIST");
            }
        }

        var watch = new SimWatch(path, absolute, token);
        connection.Watches.Add(watch);
        _pendingRegistrationEvent = watch;
        return Ok;
    }

    private byte[] Unwatch(SimConnection connection, byte[] payload)
    {
        List<string> parts = XsCodec.DecodeStrings(payload);
        if (parts.Count < 2)
        {
            throw new SimXsError("EINVAL");
        }

        int index = connection.Watches.FindIndex(w => w.Path == parts[0] && w.Token == parts[1]);
        if (index < 0)
        {
            throw new SimXsError("ENOENT");
        }

        connection.Watches.RemoveAt(index);
        return Ok;
    }

    private static string WatchPath(SimConnection connection, string path)
    {
        if (path is XenStorePath.IntroduceDomain or XenStorePath.ReleaseDomain)
        {
            return path;
        }

        return NodePath(connection, path);
    }

    /// <summary>
    /// Store change callback (lock held). A change at <paramref name="path"/> fires every watch on it or an ancestor;
    /// a recursive removal also fires watches inside the removed subtree, reporting the watched path (§4.4).
    /// Unprivileged connections only hear about nodes they may read.
    /// </summary>
    private void FireWatches(string path, XsPermission[] permissions, bool recursive)
    {
        foreach (SimConnection connection in _connections)
        {
            if (!connection.Caller.Privileged && !SimStore.CanRead(connection.Caller, permissions))
            {
                continue;
            }

            foreach (SimWatch watch in connection.Watches)
            {
                if (XenStorePath.IsSpecial(watch.AbsolutePath))
                {
                    continue;
                }

                string eventPath;
                if (XenStorePath.IsSelfOrDescendant(path, watch.AbsolutePath))
                {
                    eventPath = path;
                }
                else if (recursive && XenStorePath.IsSelfOrDescendant(watch.AbsolutePath, path))
                {
                    eventPath = watch.AbsolutePath;
                }
                else
                {
                    continue;
                }

                if (watch.IsRelative)
                {
                    // Relative watches get relative event paths, as xenstored does.
                    string prefix = connection.DomainPath + "/";
                    if (!eventPath.StartsWith(prefix, StringComparison.Ordinal))
                    {
                        continue;
                    }

                    eventPath = eventPath[prefix.Length..];
                }

                SendEvent(connection, eventPath, watch.Token);
            }
        }
    }

    /// <summary>@introduceDomain / @releaseDomain: only privileged connections receive them.</summary>
    private void FireSpecial(string name)
    {
        foreach (SimConnection connection in _connections)
        {
            if (!connection.Caller.Privileged)
            {
                continue;
            }

            foreach (SimWatch watch in connection.Watches)
            {
                if (watch.AbsolutePath == name)
                {
                    SendEvent(connection, name, watch.Token);
                }
            }
        }
    }

    private static void SendEvent(SimConnection connection, string eventPath, string token) =>
        connection.Enqueue(XsCodec.EncodeMessage(XsMessageType.WatchEvent, 0, 0, XsCodec.EncodeStrings(eventPath, token)));
}
