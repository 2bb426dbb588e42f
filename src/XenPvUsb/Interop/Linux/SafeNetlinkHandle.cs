using System.Diagnostics;
using Microsoft.Win32.SafeHandles;

namespace XenPvUsb.Interop.Linux;

/// <summary>A NETLINK_KOBJECT_UEVENT socket bound to the kernel's uevent group.</summary>
internal sealed class SafeNetlinkHandle : SafeHandleMinusOneIsInvalid
{
    internal SafeNetlinkHandle()
        : base(ownsHandle: true)
    {
    }

    /// <summary>Opens the socket; throws <see cref="IOException"/> with errno if the kernel refuses.</summary>
    public static SafeNetlinkHandle OpenUevent()
    {
        int fd = Netlink.OpenUeventSocket();
        if (fd < 0)
        {
            throw new IOException($"netlink uevent socket (NETLINK_KOBJECT_UEVENT, group 1) failed: errno {-fd}");
        }
        var handle = new SafeNetlinkHandle();
        handle.SetHandle(fd);
        return handle;
    }

    protected override bool ReleaseHandle()
    {
        int rc = Netlink.Close(handle);
        Debug.Assert(rc == 0, $"close(netlink fd) failed: {rc}");
        return rc == 0;
    }
}
