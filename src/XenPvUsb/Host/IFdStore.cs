using System.Runtime.InteropServices;

namespace XenPvUsb.Host;

/// <summary>
/// Somewhere to keep file descriptors across a restart of the daemon: systemd's fd store
/// (FileDescriptorStoreMax=), or nothing. Names tell the next instance what each fd is.
/// </summary>
public interface IFdStore
{
    /// <summary>
    /// Hands over the fds a previous instance stored whose names start with <paramref name="namePrefix"/>,
    /// once: the caller owns them from then on. Empty when there are none.
    /// </summary>
    IReadOnlyList<InheritedFd> TakeInherited(string namePrefix);

    /// <summary>Keeps a copy of <paramref name="fd"/> under <paramref name="name"/>. Returns 0 or -errno (0 when there is no store).</summary>
    int Add(string name, SafeHandle fd);

    /// <summary>Drops every fd kept under <paramref name="name"/>. Returns 0 or -errno (0 when there is no store).</summary>
    int Remove(string name);
}
