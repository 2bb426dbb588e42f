using System.Globalization;
using Microsoft.Win32.SafeHandles;
using XenPvUsb.Interop.Linux;

namespace XenPvUsb.Host;

/// <summary>
/// sd_listen_fds_with_names(3) without libsystemd: the fds systemd passed to this process (socket activation,
/// or the fd store of a previous instance), numbered from 3, named by $LISTEN_FDNAMES.
/// </summary>
public static class SystemdListenFds
{
    /// <summary>SD_LISTEN_FDS_START.</summary>
    public const int FirstFd = 3;

    /// <summary>
    /// Takes the fds once: only if $LISTEN_PID is this process, sets FD_CLOEXEC on each (systemd passes them
    /// inheritable), and unsets LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES so that neither a child nor a second
    /// call takes them again. Empty when there are none.
    /// </summary>
    public static IReadOnlyList<InheritedFd> Take() => Take(FirstFd);

    internal static IReadOnlyList<InheritedFd> Take(int firstFd)
    {
        int count = Parse(
            Environment.GetEnvironmentVariable("LISTEN_PID"),
            Environment.GetEnvironmentVariable("LISTEN_FDS"),
            Environment.GetEnvironmentVariable("LISTEN_FDNAMES"),
            Environment.ProcessId,
            out string[] names);
        foreach (string variable in (ReadOnlySpan<string>)["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"])
        {
            Environment.SetEnvironmentVariable(variable, null);
            UnixSocket.UnsetEnvironment(variable);
        }
        var fds = new List<InheritedFd>(count);
        for (int i = 0; i < count; i++)
        {
            int fd = firstFd + i;
            UnixSocket.SetCloseOnExec(fd);
            fds.Add(new InheritedFd(names[i], new SafeFileHandle(fd, ownsHandle: true)));
        }
        return fds;
    }

    /// <summary>
    /// The number of fds meant for process <paramref name="pid"/> and their names ("unknown" where systemd
    /// gave none, as sd_listen_fds_with_names does). 0 when the variables are absent, malformed or for another process.
    /// </summary>
    internal static int Parse(string? listenPid, string? listenFds, string? listenFdNames, int pid, out string[] names)
    {
        names = [];
        if (!int.TryParse(listenPid, NumberStyles.None, CultureInfo.InvariantCulture, out int forPid) || forPid != pid)
        {
            return 0;
        }
        // The kernel's default RLIMIT_NOFILE hard limit bounds what systemd can pass.
        if (!int.TryParse(listenFds, NumberStyles.None, CultureInfo.InvariantCulture, out int count) || count <= 0 || count > 524288)
        {
            return 0;
        }
        string[] given = string.IsNullOrEmpty(listenFdNames) ? [] : listenFdNames.Split(':');
        names = new string[count];
        for (int i = 0; i < count; i++)
        {
            names[i] = i < given.Length && given[i].Length > 0 ? given[i] : "unknown";
        }
        return count;
    }
}
