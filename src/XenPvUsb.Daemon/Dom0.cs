namespace XenPvUsb.Daemon;

/// <summary>Is this the Xen control domain? (/proc/xen/capabilities says control_d.)</summary>
internal static class Dom0
{
    public static bool IsControlDomain()
    {
        try
        {
            return File.ReadAllText("/proc/xen/capabilities").Contains("control_d", StringComparison.Ordinal);
        }
        catch (IOException)
        {
            return false;
        }
        catch (UnauthorizedAccessException)
        {
            return false;
        }
    }
}
