namespace XenPvUsb.Daemon;

/// <summary>
/// Is this the Xen control domain? /proc/xen/capabilities says control_d; where a sandbox gives the
/// daemon a /proc without xenfs (systemd's ProtectKernelTunables=, ProtectProc=), sysfs says it too:
/// /sys/hypervisor/type is "xen" and /sys/hypervisor/uuid is dom0's, all zeros.
/// </summary>
internal static class Dom0
{
    private const string Dom0Uuid = "00000000-0000-0000-0000-000000000000";

    public static bool IsControlDomain() => ReadTrimmed("/proc/xen/capabilities") is { } caps
        ? caps.Contains("control_d", StringComparison.Ordinal)
        : ReadTrimmed("/sys/hypervisor/type") == "xen" && ReadTrimmed("/sys/hypervisor/uuid") == Dom0Uuid;

    private static string? ReadTrimmed(string path)
    {
        try
        {
            return File.ReadAllText(path).Trim();
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }
}
