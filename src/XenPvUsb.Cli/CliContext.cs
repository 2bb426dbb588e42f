using XenPvUsb.Toolstack;
using XenPvUsb.Xen;
using XenPvUsb.XenStore;

namespace XenPvUsb.Cli;

/// <summary>What every verb needs: a xenstore connection (real, or the simulator's via XENSTORED_PATH) and the sysfs root.</summary>
internal sealed class CliContext : IAsyncDisposable
{
    private CliContext(XenStoreConnection xs, VusbToolstack toolstack)
    {
        Store = xs;
        Toolstack = toolstack;
    }

    public XenStoreConnection Store { get; }

    public VusbToolstack Toolstack { get; }

    /// <summary>sysfs root; XENPVUSB_SYSFS points the CLI at the simulated host's tree.</summary>
    public static string SysfsRoot => Environment.GetEnvironmentVariable("XENPVUSB_SYSFS") is { Length: > 0 } s ? s : "/sys";

    public static async Task<CliContext> OpenAsync(CancellationToken cancellationToken)
    {
        XenStoreConnection xs;
        try
        {
            xs = await XenStoreConnection.OpenDefaultAsync(cancellationToken: cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or UnauthorizedAccessException or XenStoreException or XenStoreConnectionClosedException)
        {
            throw new ToolstackException($"cannot reach xenstore ({e.Message}); is this a Xen dom0 (or is XENSTORED_PATH set)?");
        }
        return new CliContext(xs, new VusbToolstack(xs, SysfsRoot, DomId.Dom0));
    }

    public ValueTask DisposeAsync() => Store.DisposeAsync();
}
