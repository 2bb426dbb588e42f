using System.Runtime.InteropServices;
using System.Text;

namespace XenPvUsb.Interop.Linux;

/// <summary>
/// AF_UNIX datagrams with SCM_RIGHTS, as the sd_notify protocol uses them (sys/socket.h, sys/un.h,
/// fcntl.h for x86_64 glibc), names as in C, checked by SocketAbiTests. Wrappers return a result or -errno.
/// </summary>
internal static unsafe partial class UnixSocket
{
    public const int AF_UNIX = 1;
    public const int SOCK_DGRAM = 2;
    public const int SOCK_CLOEXEC = 0x80000;
    public const int SOL_SOCKET = 1;
    public const int SCM_RIGHTS = 1;
    public const int MSG_NOSIGNAL = 0x4000;
    public const int MSG_DONTWAIT = 0x40;
    public const int F_GETFD = 1;
    public const int F_SETFD = 2;
    public const int FD_CLOEXEC = 1;
    public const int EBADF = 9;
    public const int EINVAL = 22;
    public const int EAGAIN = 11;
    public const int EINTR = 4;

    /// <summary>sizeof(sockaddr_un.sun_path).</summary>
    public const int SunPathLength = 108;

    /// <summary>The most fds one message carries here (the kernel allows 253, SCM_MAX_FD).</summary>
    public const int MaxFds = 16;

    /// <summary>A datagram socket for sendmsg to a named peer. Returns the fd or -errno.</summary>
    public static int OpenDatagram()
    {
        int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        return fd >= 0 ? fd : -Marshal.GetLastPInvokeError();
    }

    /// <summary>
    /// The address of a socket path as $NOTIFY_SOCKET gives it: an absolute path, or "@name" for the abstract
    /// namespace (sun_path[0] = 0, no terminating NUL counted). Returns the address length, or -EINVAL.
    /// </summary>
    public static int MakeAddress(string path, out sockaddr_un address)
    {
        address = default;
        if (string.IsNullOrEmpty(path) || (path[0] != '/' && path[0] != '@'))
        {
            return -EINVAL;
        }
        int bytes = Encoding.UTF8.GetByteCount(path);
        // A path needs its NUL inside sun_path; an abstract name does not.
        if (bytes > SunPathLength - (path[0] == '/' ? 1 : 0))
        {
            return -EINVAL;
        }
        address.sun_family = AF_UNIX;
        fixed (byte* p = address.sun_path)
        {
            Encoding.UTF8.GetBytes(path, new Span<byte>(p, SunPathLength));
            if (path[0] == '@')
            {
                p[0] = 0;
                return sizeof(ushort) + bytes;
            }
        }
        return sizeof(ushort) + bytes + 1;
    }

    /// <summary>
    /// sendmsg(2) of one datagram to <paramref name="address"/>, with <paramref name="fds"/> as SCM_RIGHTS if any,
    /// never blocking (MSG_DONTWAIT: -EAGAIN if the peer's queue is full). Returns the bytes sent or -errno.
    /// Allocation-free; the handles are referenced for the call.
    /// </summary>
    public static int Send(SafeUnixSocketHandle socket, sockaddr_un* address, int addressLength, ReadOnlySpan<byte> message, ReadOnlySpan<SafeHandle> fds)
    {
        if (fds.Length > MaxFds)
        {
            return -EINVAL;
        }
        int controlLength = fds.IsEmpty ? 0 : CMSG_SPACE(fds.Length * sizeof(int));
        byte* control = stackalloc byte[CMSG_SPACE(MaxFds * sizeof(int))];
        int referenced = 0;
        try
        {
            if (!fds.IsEmpty)
            {
                new Span<byte>(control, controlLength).Clear();
                var header = (cmsghdr*)control;
                header->cmsg_len = (nuint)CMSG_LEN(fds.Length * sizeof(int));
                header->cmsg_level = SOL_SOCKET;
                header->cmsg_type = SCM_RIGHTS;
                int* data = (int*)CMSG_DATA(header);
                for (; referenced < fds.Length; referenced++)
                {
                    bool added = false;
                    fds[referenced].DangerousAddRef(ref added);
                    data[referenced] = (int)fds[referenced].DangerousGetHandle();
                }
            }
            fixed (byte* p = message)
            {
                iovec iov = default;
                iov.iov_base = p;
                iov.iov_len = (nuint)message.Length;
                msghdr msg = default;
                msg.msg_name = address;
                msg.msg_namelen = (uint)addressLength;
                msg.msg_iov = &iov;
                msg.msg_iovlen = 1;
                msg.msg_control = controlLength == 0 ? null : control;
                msg.msg_controllen = (nuint)controlLength;
                nint n;
                do
                {
                    n = sendmsg(socket, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
                }
                while (n < 0 && Marshal.GetLastPInvokeError() == EINTR);
                return n >= 0 ? (int)n : -Marshal.GetLastPInvokeError();
            }
        }
        finally
        {
            for (int i = 0; i < referenced; i++)
            {
                fds[i].DangerousRelease();
            }
        }
    }

    /// <summary>Sets FD_CLOEXEC on an fd. Returns 0 or -errno.</summary>
    public static int SetCloseOnExec(nint fd)
    {
        int flags = fcntl((int)fd, F_GETFD, 0);
        if (flags < 0 || fcntl((int)fd, F_SETFD, flags | FD_CLOEXEC) < 0)
        {
            return -Marshal.GetLastPInvokeError();
        }
        return 0;
    }

    /// <summary>True if FD_CLOEXEC is set on the fd.</summary>
    public static bool IsCloseOnExec(nint fd) => (fcntl((int)fd, F_GETFD, 0) & FD_CLOEXEC) != 0;

    /// <summary>unsetenv(3), so that native code and child processes no longer see the variable either.</summary>
    public static void UnsetEnvironment(string name) => unsetenv(name);

    public static int Close(nint fd) => close((int)fd) == 0 ? 0 : -Marshal.GetLastPInvokeError();

    // <sys/socket.h> macros for x86_64: headers and data are aligned to sizeof(size_t).
    public static int CMSG_ALIGN(int length) => (length + sizeof(nuint) - 1) & ~(sizeof(nuint) - 1);

    public static int CMSG_SPACE(int length) => CMSG_ALIGN(length) + CMSG_ALIGN(sizeof(cmsghdr));

    public static int CMSG_LEN(int length) => CMSG_ALIGN(sizeof(cmsghdr)) + length;

    public static byte* CMSG_DATA(cmsghdr* header) => (byte*)header + CMSG_ALIGN(sizeof(cmsghdr));

    [LibraryImport("libc", SetLastError = true)]
    private static partial int socket(int domain, int type, int protocol);

    [LibraryImport("libc", SetLastError = true)]
    private static partial nint sendmsg(SafeUnixSocketHandle fd, msghdr* msg, int flags);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int fcntl(int fd, int cmd, int arg);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int unsetenv(string name);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int close(int fd);
}

/// <summary>struct sockaddr_un, 110 bytes.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct sockaddr_un
{
    public ushort sun_family;
    public fixed byte sun_path[UnixSocket.SunPathLength];
}

/// <summary>struct iovec, 16 bytes.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct iovec
{
    public void* iov_base;
    public nuint iov_len;
}

/// <summary>struct msghdr, 56 bytes (glibc x86_64: size_t lengths).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct msghdr
{
    public void* msg_name;
    public uint msg_namelen;
    public iovec* msg_iov;
    public nuint msg_iovlen;
    public void* msg_control;
    public nuint msg_controllen;
    public int msg_flags;
}

/// <summary>struct cmsghdr, 16 bytes; the data follows at CMSG_DATA.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct cmsghdr
{
    public nuint cmsg_len;
    public int cmsg_level;
    public int cmsg_type;
}
