using System.Runtime.InteropServices;

namespace XenPvUsb.Interop.Linux;

/// <summary>
/// The NETLINK_KOBJECT_UEVENT socket (host-interfaces.md §2.4): linux/netlink.h, sys/socket.h for
/// x86_64, names as in C, checked by UsbDevFsAbiTests. Wrappers return a result or -errno.
/// </summary>
internal static unsafe partial class Netlink
{
    public const int AF_NETLINK = 16;
    public const int SOCK_DGRAM = 2;
    public const int SOCK_NONBLOCK = 0x800;
    public const int SOCK_CLOEXEC = 0x80000;
    public const int NETLINK_KOBJECT_UEVENT = 15;
    public const int SOL_SOCKET = 1;
    public const int SO_RCVBUF = 8;
    public const int SO_RCVBUFFORCE = 33;

    /// <summary>The kernel's uevent multicast group (udev re-broadcasts on group 2 with its own header).</summary>
    public const uint UeventKernelGroup = 1;

    /// <summary>Opens and binds a uevent socket on the kernel group. Returns the fd or -errno.</summary>
    public static int OpenUeventSocket()
    {
        int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_KOBJECT_UEVENT);
        if (fd < 0)
        {
            return -Marshal.GetLastPInvokeError();
        }
        sockaddr_nl addr = default;
        addr.nl_family = AF_NETLINK;
        addr.nl_groups = UeventKernelGroup;
        if (bind(fd, &addr, (uint)sizeof(sockaddr_nl)) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            close(fd);
            return -errno;
        }
        return fd;
    }

    /// <summary>
    /// Asks for a receive queue of <paramref name="bytes"/>: SO_RCVBUFFORCE first (CAP_NET_ADMIN, past
    /// net.core.rmem_max), else SO_RCVBUF (capped at rmem_max). Returns 0 if forced, else the errno
    /// SO_RCVBUFFORCE failed with; <paramref name="granted"/> is what the kernel then reports (it doubles the request).
    /// </summary>
    public static int SetReceiveBuffer(SafeNetlinkHandle fd, int bytes, out int granted)
    {
        int forced = setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof(int)) == 0 ? 0 : Marshal.GetLastPInvokeError();
        if (forced != 0)
        {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(int));
        }
        int value = 0;
        uint length = sizeof(int);
        granted = getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &value, &length) == 0 ? value : 0;
        return forced;
    }

    /// <summary>recvfrom(2): bytes received or -errno; <paramref name="senderPid"/> is the sender's port id (0 = the kernel).</summary>
    public static int Receive(SafeNetlinkHandle fd, Span<byte> buffer, out uint senderPid)
    {
        sockaddr_nl from = default;
        uint fromLength = (uint)sizeof(sockaddr_nl);
        nint n;
        fixed (byte* p = buffer)
        {
            n = recvfrom(fd, p, (nuint)buffer.Length, 0, &from, &fromLength);
        }
        senderPid = from.nl_pid;
        return n >= 0 ? (int)n : -Marshal.GetLastPInvokeError();
    }

    public static int Close(nint fd) => close((int)fd) == 0 ? 0 : -Marshal.GetLastPInvokeError();

    [LibraryImport("libc", SetLastError = true)]
    private static partial int socket(int domain, int type, int protocol);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int bind(int fd, sockaddr_nl* addr, uint addrlen);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int setsockopt(SafeNetlinkHandle fd, int level, int optname, void* optval, uint optlen);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int getsockopt(SafeNetlinkHandle fd, int level, int optname, void* optval, uint* optlen);

    [LibraryImport("libc", SetLastError = true)]
    private static partial nint recvfrom(SafeNetlinkHandle fd, byte* buf, nuint len, int flags, sockaddr_nl* from, uint* fromlen);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int close(int fd);
}

/// <summary>struct sockaddr_nl, 12 bytes.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct sockaddr_nl
{
    public ushort nl_family;
    public ushort nl_pad;
    public uint nl_pid;
    public uint nl_groups;
}
