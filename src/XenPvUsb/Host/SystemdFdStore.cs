using System.Runtime.InteropServices;

namespace XenPvUsb.Host;

/// <summary>
/// systemd's file descriptor store (systemd.service(5) FileDescriptorStoreMax=, sd_pid_notify_with_fds(3)):
/// FDSTORE=1 keeps a copy of an fd in the service manager, which passes it to the next instance of the
/// service through LISTEN_FDS; FDSTOREREMOVE=1 (systemd 236) drops it. systemd keeps its copy until it is
/// removed, or until the fd reports POLLHUP/POLLERR, or the unit stops for good.
/// </summary>
public sealed class SystemdFdStore : IFdStore
{
    private readonly Lock _lock = new();
    private readonly SystemdNotifier _notifier;
    private readonly List<InheritedFd> _inherited;

    /// <param name="notifier">Where FDSTORE messages go.</param>
    /// <param name="inherited">What systemd passed at start (<see cref="SystemdListenFds.Take()"/>).</param>
    public SystemdFdStore(SystemdNotifier notifier, IReadOnlyList<InheritedFd> inherited)
    {
        ArgumentNullException.ThrowIfNull(notifier);
        ArgumentNullException.ThrowIfNull(inherited);
        _notifier = notifier;
        _inherited = [.. inherited];
    }

    /// <summary>
    /// The store when running under systemd ($NOTIFY_SOCKET set), with the fds it passed in (taken from
    /// LISTEN_FDS now); <see cref="NullFdStore"/> otherwise. The notifier is the caller's to dispose.
    /// </summary>
    public static IFdStore FromEnvironment(SystemdNotifier? notifier)
    {
        IReadOnlyList<InheritedFd> inherited = SystemdListenFds.Take();
        if (notifier is null)
        {
            foreach (InheritedFd fd in inherited)
            {
                fd.Handle.Dispose();
            }
            return NullFdStore.Instance;
        }
        return new SystemdFdStore(notifier, inherited);
    }

    public IReadOnlyList<InheritedFd> TakeInherited(string namePrefix)
    {
        ArgumentNullException.ThrowIfNull(namePrefix);
        lock (_lock)
        {
            List<InheritedFd> taken = _inherited.FindAll(fd => fd.Name.StartsWith(namePrefix, StringComparison.Ordinal));
            _inherited.RemoveAll(fd => fd.Name.StartsWith(namePrefix, StringComparison.Ordinal));
            return taken;
        }
    }

    /// <summary>Inherited fds nobody took: closes this process's copies (systemd keeps its own) and returns their names.</summary>
    public IReadOnlyList<string> CloseUntaken()
    {
        lock (_lock)
        {
            var names = new List<string>(_inherited.Count);
            foreach (InheritedFd fd in _inherited)
            {
                names.Add(fd.Name);
                fd.Handle.Dispose();
            }
            _inherited.Clear();
            return names;
        }
    }

    public int Add(string name, SafeHandle fd) => _notifier.StoreFd(name, fd);

    public int Remove(string name) => _notifier.RemoveFd(name);
}
