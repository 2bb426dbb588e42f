using System.Diagnostics;
using Microsoft.Win32.SafeHandles;

namespace XenPvUsb.Interop.Linux;

/// <summary>An unbound AF_UNIX datagram socket, used to send to a named peer (sd_notify).</summary>
internal sealed class SafeUnixSocketHandle : SafeHandleMinusOneIsInvalid
{
    internal SafeUnixSocketHandle()
        : base(ownsHandle: true)
    {
    }

    /// <summary>Opens the socket; throws <see cref="IOException"/> with errno if the kernel refuses.</summary>
    public static SafeUnixSocketHandle OpenDatagram()
    {
        int fd = UnixSocket.OpenDatagram();
        if (fd < 0)
        {
            throw new IOException($"socket(AF_UNIX, SOCK_DGRAM) failed: errno {-fd}");
        }
        var handle = new SafeUnixSocketHandle();
        handle.SetHandle(fd);
        return handle;
    }

    protected override bool ReleaseHandle()
    {
        int rc = UnixSocket.Close(handle);
        Debug.Assert(rc == 0, $"close(unix socket) failed: {rc}");
        return rc == 0;
    }
}
