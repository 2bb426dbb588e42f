using System.Globalization;
using XenPvUsb.Logging;

namespace XenPvUsb.XenStore;

public sealed partial class XenStoreConnection
{
    private long _nextWatchToken;

    /// <summary>
    /// WATCH: events for the path and everything below it. The path may be relative, or a special name
    /// (<c>@introduceDomain</c>, <c>@releaseDomain</c>). Each watch gets its own token, so events route to its channel.
    /// </summary>
    public async Task<XenStoreWatch> WatchAsync(string path, CancellationToken cancellationToken = default)
    {
        CheckPath(XsMessageType.Watch, path, allowSpecial: true);
        string token = "xpu" + Interlocked.Increment(ref _nextWatchToken).ToString(CultureInfo.InvariantCulture);
        var watch = new XenStoreWatch(this, path, token);

        // Registered before the request goes out so the registration event cannot overtake it.
        lock (_gate)
        {
            if (_aborted)
            {
                throw CreateClosedException();
            }

            _watches.Add(token, watch);
        }

        try
        {
            await RequestAsync(XsMessageType.Watch, 0, XsCodec.EncodeStrings(path, token), path, cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            lock (_gate)
            {
                _watches.Remove(token);
            }

            watch.Complete();
            throw;
        }

        return watch;
    }

    internal async Task UnwatchAsync(XenStoreWatch watch)
    {
        lock (_gate)
        {
            if (_aborted || !_watches.Remove(watch.Token))
            {
                return;
            }
        }

        try
        {
            await RequestAsync(XsMessageType.Unwatch, 0, XsCodec.EncodeStrings(watch.Path, watch.Token), watch.Path, CancellationToken.None)
                .ConfigureAwait(false);
        }
        catch (XenStoreConnectionClosedException)
        {
            // The watch died with the connection.
        }
        catch (XenStoreException ex) when (ex.ErrorName == "ENOENT")
        {
            // Already gone server-side (e.g. after RESET_WATCHES).
        }
    }

    /// <summary>Records a dropped event; kept here so the receive loop's hot path stays small.</summary>
    private void LogUnknownToken(string eventPath, string token) => _logger.XsUnknownWatchToken(eventPath, token);
}
