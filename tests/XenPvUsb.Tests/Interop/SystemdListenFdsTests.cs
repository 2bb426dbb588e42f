using Tmds.Linux;
using XenPvUsb.Host;
using XenPvUsb.Interop.Linux;

namespace XenPvUsb.Tests.Interop;

/// <summary>LISTEN_PID / LISTEN_FDS / LISTEN_FDNAMES, and the fd store built on them.</summary>
[TestFixture]
public sealed unsafe class SystemdListenFdsTests
{
    private const int Pid = 4242;

    [Test]
    public void Parse_CountsAndNamesForThisProcess()
    {
        int n = SystemdListenFds.Parse("4242", "3", "xenpvusb-port-1-2:xenpvusb-port-3-1.4:other", Pid, out string[] names);
        Assert.That(n, Is.EqualTo(3));
        Assert.That(names, Is.EqualTo(new[] { "xenpvusb-port-1-2", "xenpvusb-port-3-1.4", "other" }));
    }

    [Test]
    public void Parse_MissingOrEmptyNames_AreUnknown()
    {
        Assert.That(SystemdListenFds.Parse("4242", "2", null, Pid, out string[] none), Is.EqualTo(2));
        Assert.That(none, Is.EqualTo(new[] { "unknown", "unknown" }));
        Assert.That(SystemdListenFds.Parse("4242", "3", "a::", Pid, out string[] some), Is.EqualTo(3));
        Assert.That(some, Is.EqualTo(new[] { "a", "unknown", "unknown" }));
    }

    [TestCase("4243", "2", TestName = "Parse_AnotherProcesssFds_AreNotOurs")]
    [TestCase(null, "2", TestName = "Parse_NoListenPid_MeansNone")]
    [TestCase("4242", "0", TestName = "Parse_ZeroFds")]
    [TestCase("4242", "-1", TestName = "Parse_NegativeCount_IsIgnored")]
    [TestCase("4242", "2x", TestName = "Parse_GarbageCount_IsIgnored")]
    [TestCase(" 4242", "2", TestName = "Parse_GarbagePid_IsIgnored")]
    public void Parse_Refuses(string? pid, string? fds) =>
        Assert.That(SystemdListenFds.Parse(pid, fds, "a:b", Pid, out _), Is.Zero);

    [Test]
    public void Take_WrapsTheFds_SetsCloseOnExec_AndUnsetsTheVariables()
    {
        // Two fds at a free spot high up stand in for systemd's 3 and 4 (the test host owns those).
        int* pipe = stackalloc int[2];
        Assert.That(LibC.pipe2(pipe, 0), Is.Zero);
        const int First = 700;
        Assert.That(LibC.fcntl(First, LibC.F_GETFD), Is.EqualTo(-1), "fd 700 must be free");
        Assert.That(LibC.dup2(pipe[0], First), Is.EqualTo(First));
        Assert.That(LibC.dup2(pipe[1], First + 1), Is.EqualTo(First + 1));
        LibC.close(pipe[0]);
        LibC.close(pipe[1]);
        Assert.That(UnixSocket.IsCloseOnExec(First), Is.False, "systemd passes them inheritable");

        Environment.SetEnvironmentVariable("LISTEN_PID", Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Environment.SetEnvironmentVariable("LISTEN_FDS", "2");
        Environment.SetEnvironmentVariable("LISTEN_FDNAMES", "xenpvusb-port-1-2:other");
        IReadOnlyList<InheritedFd> fds = SystemdListenFds.Take(First);
        try
        {
            Assert.That(fds.Select(f => f.Name), Is.EqualTo(new[] { "xenpvusb-port-1-2", "other" }));
            Assert.That(fds.Select(f => (int)f.Handle.DangerousGetHandle()), Is.EqualTo(new[] { First, First + 1 }));
            Assert.That(UnixSocket.IsCloseOnExec(First) && UnixSocket.IsCloseOnExec(First + 1), Is.True);
            Assert.That(Environment.GetEnvironmentVariable("LISTEN_PID"), Is.Null);
            Assert.That(Environment.GetEnvironmentVariable("LISTEN_FDS"), Is.Null);
            Assert.That(Environment.GetEnvironmentVariable("LISTEN_FDNAMES"), Is.Null);
            Assert.That(SystemdListenFds.Take(First), Is.Empty, "taken once");
        }
        finally
        {
            foreach (InheritedFd fd in fds)
            {
                fd.Handle.Dispose();
            }
        }
        Assert.That(LibC.fcntl(First, LibC.F_GETFD), Is.EqualTo(-1), "the handles own the fds");
    }

    [Test]
    public void FdStore_HandsOverByPrefix_Once_AndClosesTheRest()
    {
        using var notifier = new SystemdNotifier("/nonexistent/notify");
        var store = new SystemdFdStore(notifier,
        [
            new InheritedFd("xenpvusb-port-1-2", File.OpenHandle("/dev/null")),
            new InheritedFd("other", File.OpenHandle("/dev/null")),
            new InheritedFd("xenpvusb-port-3-1", File.OpenHandle("/dev/null")),
        ]);
        IReadOnlyList<InheritedFd> ours = store.TakeInherited("xenpvusb-port-");
        Assert.That(ours.Select(f => f.Name), Is.EqualTo(new[] { "xenpvusb-port-1-2", "xenpvusb-port-3-1" }));
        Assert.That(store.TakeInherited("xenpvusb-port-"), Is.Empty);
        InheritedFd other = store.TakeInherited("oth")[0];
        Assert.That(store.CloseUntaken(), Is.Empty);
        foreach (InheritedFd fd in ours.Append(other))
        {
            fd.Handle.Dispose();
        }
    }

    [Test]
    public void NullFdStore_InheritsNothing_AndStoresNothing()
    {
        Assert.That(NullFdStore.Instance.TakeInherited(""), Is.Empty);
        using var h = File.OpenHandle("/dev/null");
        Assert.That(NullFdStore.Instance.Add("x", h), Is.Zero);
        Assert.That(NullFdStore.Instance.Remove("x"), Is.Zero);
    }
}
