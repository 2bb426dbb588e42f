using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using XenPvUsb.Interop.Linux;
using XenPvUsb.Tests.Support;
using static XenPvUsb.Interop.Linux.UnixSocket;

namespace XenPvUsb.Tests.Interop;

/// <summary>The AF_UNIX / SCM_RIGHTS / fcntl mirror the sd_notify sender uses, checked against glibc's headers.</summary>
[TestFixture]
public sealed unsafe class SocketAbiTests
{
    private static Dictionary<string, long> s_c = null!;

    [OneTimeSetUp]
    public static void CompileHeaderProbe()
    {
        s_c = CProgram.Run("""
            #define _GNU_SOURCE
            #include <stdio.h>
            #include <stddef.h>
            #include <errno.h>
            #include <fcntl.h>
            #include <sys/socket.h>
            #include <sys/un.h>
            #include <sys/uio.h>
            #define S(t) printf("sizeof(" #t ")=%zu\n", sizeof(struct t));
            #define O(t, f) printf("offsetof(" #t "," #f ")=%zu\n", offsetof(struct t, f));
            #define K(c) printf(#c "=%lld\n", (long long)(c));
            int main(void) {
                S(sockaddr_un) O(sockaddr_un, sun_family) O(sockaddr_un, sun_path)
                S(iovec) O(iovec, iov_base) O(iovec, iov_len)
                S(msghdr) O(msghdr, msg_name) O(msghdr, msg_namelen) O(msghdr, msg_iov) O(msghdr, msg_iovlen)
                O(msghdr, msg_control) O(msghdr, msg_controllen) O(msghdr, msg_flags)
                S(cmsghdr) O(cmsghdr, cmsg_len) O(cmsghdr, cmsg_level) O(cmsghdr, cmsg_type)
                K(AF_UNIX) K(SOCK_DGRAM) K(SOCK_CLOEXEC) K(SOL_SOCKET) K(SCM_RIGHTS) K(MSG_NOSIGNAL) K(MSG_DONTWAIT)
                K(F_GETFD) K(F_SETFD) K(FD_CLOEXEC) K(EBADF) K(EINVAL) K(EAGAIN) K(EINTR)
                K(CMSG_SPACE(4)) K(CMSG_LEN(4)) K(CMSG_SPACE(64)) K(CMSG_LEN(64)) K(CMSG_SPACE(12)) K(CMSG_LEN(12))
                struct { struct cmsghdr h; int fds[4]; } c;
                printf("CMSG_DATA=%td\n", (char *)CMSG_DATA(&c.h) - (char *)&c.h);
                return 0;
            }
            """);
    }

    private static long C(string key) => s_c.TryGetValue(key, out long v) ? v : throw new KeyNotFoundException(key);

    private static void AssertLayout<T>(string cName, params string[] fields)
        where T : struct
    {
        Assert.That(Unsafe.SizeOf<T>(), Is.EqualTo(C($"sizeof({cName})")), $"sizeof({cName})");
        foreach (string f in fields)
        {
            Assert.That((long)Marshal.OffsetOf<T>(f), Is.EqualTo(C($"offsetof({cName},{f})")), $"offsetof({cName},{f})");
        }
    }

    [Test]
    public void SockaddrUn_MatchesHeader() => AssertLayout<sockaddr_un>("sockaddr_un", "sun_family", "sun_path");

    [Test]
    public void Iovec_MatchesHeader() => AssertLayout<iovec>("iovec", "iov_base", "iov_len");

    [Test]
    public void Msghdr_MatchesHeader() =>
        AssertLayout<msghdr>("msghdr", "msg_name", "msg_namelen", "msg_iov", "msg_iovlen", "msg_control", "msg_controllen", "msg_flags");

    [Test]
    public void Cmsghdr_MatchesHeader() => AssertLayout<cmsghdr>("cmsghdr", "cmsg_len", "cmsg_level", "cmsg_type");

    [Test]
    public void CmsgMacros_MatchHeader()
    {
        Assert.Multiple(() =>
        {
            foreach (int n in (ReadOnlySpan<int>)[4, 12, 64])
            {
                Assert.That((long)CMSG_SPACE(n), Is.EqualTo(C($"CMSG_SPACE({n})")), $"CMSG_SPACE({n})");
                Assert.That((long)CMSG_LEN(n), Is.EqualTo(C($"CMSG_LEN({n})")), $"CMSG_LEN({n})");
            }
            cmsghdr h = default;
            Assert.That((long)(CMSG_DATA(&h) - (byte*)&h), Is.EqualTo(C("CMSG_DATA")), "CMSG_DATA");
        });
    }

    [Test]
    public void Constants_MatchHeader()
    {
        Assert.Multiple(() =>
        {
            Assert.That(C("AF_UNIX"), Is.EqualTo((long)AF_UNIX), "AF_UNIX");
            Assert.That(C("SOCK_DGRAM"), Is.EqualTo((long)SOCK_DGRAM), "SOCK_DGRAM");
            Assert.That(C("SOCK_CLOEXEC"), Is.EqualTo((long)SOCK_CLOEXEC), "SOCK_CLOEXEC");
            Assert.That(C("SOL_SOCKET"), Is.EqualTo((long)SOL_SOCKET), "SOL_SOCKET");
            Assert.That(C("SCM_RIGHTS"), Is.EqualTo((long)SCM_RIGHTS), "SCM_RIGHTS");
            Assert.That(C("MSG_NOSIGNAL"), Is.EqualTo((long)MSG_NOSIGNAL), "MSG_NOSIGNAL");
            Assert.That(C("MSG_DONTWAIT"), Is.EqualTo((long)MSG_DONTWAIT), "MSG_DONTWAIT");
            Assert.That(C("F_GETFD"), Is.EqualTo((long)F_GETFD), "F_GETFD");
            Assert.That(C("F_SETFD"), Is.EqualTo((long)F_SETFD), "F_SETFD");
            Assert.That(C("FD_CLOEXEC"), Is.EqualTo((long)FD_CLOEXEC), "FD_CLOEXEC");
            Assert.That(C("EBADF"), Is.EqualTo((long)EBADF), "EBADF");
            Assert.That(C("EINVAL"), Is.EqualTo((long)EINVAL), "EINVAL");
            Assert.That(C("EAGAIN"), Is.EqualTo((long)EAGAIN), "EAGAIN");
            Assert.That(C("EINTR"), Is.EqualTo((long)EINTR), "EINTR");
            Assert.That(C("sizeof(sockaddr_un)") - C("offsetof(sockaddr_un,sun_path)"), Is.EqualTo((long)SunPathLength), "sun_path length");
        });
    }
}
