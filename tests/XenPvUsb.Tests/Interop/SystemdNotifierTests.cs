using System.Text;
using Microsoft.Win32.SafeHandles;
using Tmds.Linux;
using XenPvUsb.Host;
using XenPvUsb.Interop.Linux;

namespace XenPvUsb.Tests.Interop;

/// <summary>The sd_notify sender against a real AF_UNIX datagram socket standing in for systemd's notify socket.</summary>
[TestFixture]
public sealed unsafe class SystemdNotifierTests
{
    private string _dir = null!;
    private string _path = null!;
    private int _receiver = -1;

    [SetUp]
    public void SetUp()
    {
        _dir = Path.Combine(Path.GetTempPath(), "xenpvusb-tests", "notify-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_dir);
        _path = Path.Combine(_dir, "notify");
        _receiver = Bind(_path);
    }

    [TearDown]
    public void TearDown()
    {
        if (_receiver >= 0)
        {
            LibC.close(_receiver);
        }
        Directory.Delete(_dir, recursive: true);
    }

    private static int Bind(string path)
    {
        int fd = LibC.socket(LibC.AF_UNIX, LibC.SOCK_DGRAM | LibC.SOCK_CLOEXEC | LibC.SOCK_NONBLOCK, 0);
        Assert.That(fd, Is.GreaterThanOrEqualTo(0));
        int length = UnixSocket.MakeAddress(path, out XenPvUsb.Interop.Linux.sockaddr_un address);
        Assert.That(LibC.bind(fd, (sockaddr*)&address, length), Is.Zero, "bind");
        return fd;
    }

    /// <summary>One datagram: its text and the fds that came with it as SCM_RIGHTS (owned by the caller).</summary>
    private static (string Text, List<int> Fds) Receive(int socket)
    {
        byte* data = stackalloc byte[4096];
        byte* control = stackalloc byte[256];
        Tmds.Linux.iovec iov = default;
        iov.iov_base = data;
        iov.iov_len = 4096;
        Tmds.Linux.msghdr msg = default;
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = 256;
        long n = LibC.recvmsg(socket, &msg, LibC.MSG_CMSG_CLOEXEC);
        Assert.That(n, Is.GreaterThanOrEqualTo(0), $"recvmsg: errno {LibC.errno}");
        var fds = new List<int>();
        for (Tmds.Linux.cmsghdr* c = LibC.CMSG_FIRSTHDR(&msg); c != null; c = LibC.CMSG_NXTHDR(&msg, c))
        {
            if (c->cmsg_level == LibC.SOL_SOCKET && c->cmsg_type == LibC.SCM_RIGHTS)
            {
                int count = ((int)c->cmsg_len - LibC.CMSG_LEN(0)) / sizeof(int);
                for (int i = 0; i < count; i++)
                {
                    fds.Add(((int*)LibC.CMSG_DATA(c))[i]);
                }
            }
        }
        return (Encoding.ASCII.GetString(data, (int)n), fds);
    }

    private static (ulong Dev, ulong Ino) Identity(int fd)
    {
        stat st;
        Assert.That(LibC.fstat(fd, &st), Is.Zero);
        return (st.st_dev, st.st_ino);
    }

    [Test]
    public void PlainMessage_IsOneDatagramWithoutFds()
    {
        using var notifier = new SystemdNotifier(_path);
        Assert.That(notifier.Notify("READY=1\nSTATUS=serving"u8), Is.Zero);
        (string text, List<int> fds) = Receive(_receiver);
        Assert.That(text, Is.EqualTo("READY=1\nSTATUS=serving"));
        Assert.That(fds, Is.Empty);
    }

    [Test]
    public void Watchdog_SendsWatchdog1_WithoutAllocating()
    {
        using var notifier = new SystemdNotifier(_path);
        Assert.That(notifier.NotifyWatchdog(), Is.Zero);
        Assert.That(Receive(_receiver).Text, Is.EqualTo("WATCHDOG=1"));

        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 100; i++)
        {
            notifier.NotifyWatchdog();
        }
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.That(allocated, Is.Zero, "the loop thread sends it every few seconds");
    }

    [Test]
    public void StoreFd_SendsFdStoreWithItsName_AndTheFdAsScmRights()
    {
        using var notifier = new SystemdNotifier(_path);
        using SafeFileHandle file = File.OpenHandle(Path.Combine(_dir, "payload"), FileMode.Create, FileAccess.ReadWrite);
        Assert.That(notifier.StoreFd("xenpvusb-port-3-1.4", file), Is.Zero);

        (string text, List<int> fds) = Receive(_receiver);
        try
        {
            Assert.That(text, Is.EqualTo("FDSTORE=1\nFDNAME=xenpvusb-port-3-1.4"));
            Assert.That(fds, Has.Count.EqualTo(1));
            Assert.That(Identity(fds[0]), Is.EqualTo(Identity((int)file.DangerousGetHandle())), "the same open file arrived");
        }
        finally
        {
            fds.ForEach(fd => LibC.close(fd));
        }
    }

    [Test]
    public void RemoveFd_SendsFdStoreRemove()
    {
        using var notifier = new SystemdNotifier(_path);
        Assert.That(notifier.RemoveFd("xenpvusb-port-3-1.4"), Is.Zero);
        (string text, List<int> fds) = Receive(_receiver);
        Assert.That(text, Is.EqualTo("FDSTOREREMOVE=1\nFDNAME=xenpvusb-port-3-1.4"));
        Assert.That(fds, Is.Empty);
    }

    [Test]
    public void AbstractSocketNames_AreSupported()
    {
        string name = "@xenpvusb-test-" + Guid.NewGuid().ToString("N");
        int receiver = Bind(name);
        try
        {
            using var notifier = new SystemdNotifier(name);
            Assert.That(notifier.Notify("READY=1"u8), Is.Zero);
            Assert.That(Receive(receiver).Text, Is.EqualTo("READY=1"));
        }
        finally
        {
            LibC.close(receiver);
        }
    }

    [Test]
    public void NobodyListening_ReturnsMinusErrno_AndDoesNotThrow()
    {
        using var notifier = new SystemdNotifier(Path.Combine(_dir, "nobody"));
        Assert.That(notifier.NotifyWatchdog(), Is.LessThan(0));
    }

    [TestCase("")]
    [TestCase("has:colon")]
    [TestCase("tab\there")]
    public void InvalidFdNames_AreRefused(string name)
    {
        using var notifier = new SystemdNotifier(_path);
        Assert.That(SystemdNotifier.IsValidFdName(name), Is.False);
        Assert.Throws<ArgumentException>(() => notifier.RemoveFd(name));
    }

    [Test]
    public void FdNames_UpTo255PrintableCharacters_AreValid()
    {
        Assert.That(SystemdNotifier.IsValidFdName(new string('a', 255)), Is.True);
        Assert.That(SystemdNotifier.IsValidFdName(new string('a', 256)), Is.False);
        Assert.That(SystemdNotifier.IsValidFdName("xenpvusb-port-12-1.2.3"), Is.True);
    }

    [TestCase("30000000", null, 42, 30.0)]
    [TestCase("30000000", "42", 42, 30.0)]
    [TestCase("30000000", "43", 42, null)]
    [TestCase("0", null, 42, null)]
    [TestCase(null, null, 42, null)]
    [TestCase("soon", null, 42, null)]
    public void WatchdogInterval_FromWatchdogUsecForThisProcess(string? usec, string? pid, int self, double? seconds) =>
        Assert.That(SystemdNotifier.ParseWatchdog(usec, pid, self)?.TotalSeconds, Is.EqualTo(seconds));

    [Test]
    public void FromEnvironment_UsesNotifySocket()
    {
        string? saved = Environment.GetEnvironmentVariable("NOTIFY_SOCKET");
        try
        {
            Environment.SetEnvironmentVariable("NOTIFY_SOCKET", _path);
            using (SystemdNotifier? notifier = SystemdNotifier.FromEnvironment())
            {
                Assert.That(notifier, Is.Not.Null);
                Assert.That(notifier!.SocketPath, Is.EqualTo(_path));
                Assert.That(notifier.Notify("READY=1"u8), Is.Zero);
                Assert.That(Receive(_receiver).Text, Is.EqualTo("READY=1"));
            }
            Environment.SetEnvironmentVariable("NOTIFY_SOCKET", "vsock:2:1234");
            Assert.That(SystemdNotifier.FromEnvironment(), Is.Null, "not a unix socket: not supported");
            Environment.SetEnvironmentVariable("NOTIFY_SOCKET", null);
            Assert.That(SystemdNotifier.FromEnvironment(), Is.Null, "not under systemd");
        }
        finally
        {
            Environment.SetEnvironmentVariable("NOTIFY_SOCKET", saved);
        }
    }
}
