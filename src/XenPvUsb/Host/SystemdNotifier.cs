using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using XenPvUsb.Interop.Linux;

namespace XenPvUsb.Host;

/// <summary>
/// sd_notify(3) without libsystemd: one datagram per message to $NOTIFY_SOCKET, with file descriptors as
/// SCM_RIGHTS when the message stores them (FDSTORE=1). Microsoft.Extensions.Hosting.Systemd cannot pass
/// fds, hence this. Plain messages (<see cref="Notify(ReadOnlySpan{byte})"/>, <see cref="NotifyWatchdog"/>)
/// allocate nothing and may be sent from any thread, the event loop's included: a datagram to a local
/// socket never blocks here (MSG_DONTWAIT), it fails with EAGAIN if systemd's queue is full.
/// </summary>
public sealed unsafe class SystemdNotifier : IDisposable
{
    /// <summary>systemd's FDNAME_MAX.</summary>
    public const int MaxFdNameLength = 255;

    private readonly SafeUnixSocketHandle _socket;
    private readonly int _addressLength;
    private sockaddr_un _address;

    /// <param name="socketPath">An absolute socket path, or "@name" for the abstract namespace.</param>
    /// <exception cref="ArgumentException">The path is not one (e.g. systemd's "vsock:" addresses, not supported).</exception>
    public SystemdNotifier(string socketPath)
    {
        ArgumentNullException.ThrowIfNull(socketPath);
        _addressLength = UnixSocket.MakeAddress(socketPath, out _address);
        if (_addressLength < 0)
        {
            throw new ArgumentException($"NOTIFY_SOCKET '{socketPath}' is neither an absolute path nor an abstract socket name.", nameof(socketPath));
        }
        SocketPath = socketPath;
        _socket = SafeUnixSocketHandle.OpenDatagram();
    }

    /// <summary>Where the messages go.</summary>
    public string SocketPath { get; }

    /// <summary>A notifier for $NOTIFY_SOCKET, or null when the process does not run under systemd (or the address is not a unix socket).</summary>
    public static SystemdNotifier? FromEnvironment()
    {
        string? path = Environment.GetEnvironmentVariable("NOTIFY_SOCKET");
        if (string.IsNullOrEmpty(path) || UnixSocket.MakeAddress(path, out _) < 0)
        {
            return null;
        }
        return new SystemdNotifier(path);
    }

    /// <summary>
    /// sd_watchdog_enabled(3): the WatchdogSec= interval systemd expects WATCHDOG=1 within ($WATCHDOG_USEC, for
    /// this process if $WATCHDOG_PID says so), or null when the watchdog is off. Send every half of it or more often.
    /// </summary>
    public static TimeSpan? WatchdogInterval() => ParseWatchdog(
        Environment.GetEnvironmentVariable("WATCHDOG_USEC"),
        Environment.GetEnvironmentVariable("WATCHDOG_PID"),
        Environment.ProcessId);

    internal static TimeSpan? ParseWatchdog(string? usec, string? pid, int processId)
    {
        if (!ulong.TryParse(usec, NumberStyles.None, CultureInfo.InvariantCulture, out ulong microseconds) || microseconds == 0)
        {
            return null;
        }
        if (!string.IsNullOrEmpty(pid) && (!int.TryParse(pid, NumberStyles.None, CultureInfo.InvariantCulture, out int forPid) || forPid != processId))
        {
            return null;
        }
        return TimeSpan.FromMicroseconds(Math.Min(microseconds, (ulong)TimeSpan.MaxValue.TotalMicroseconds));
    }

    /// <summary>Sends newline-separated VAR=VALUE assignments ("READY=1", "WATCHDOG=1", ...). Returns 0 or -errno.</summary>
    public int Notify(ReadOnlySpan<byte> state) => Send(state, []);

    /// <summary>WATCHDOG=1: tells systemd the service is alive (WatchdogSec=).</summary>
    public int NotifyWatchdog() => Send("WATCHDOG=1"u8, []);

    /// <summary>FDSTORE=1 with FDNAME=<paramref name="name"/>: systemd keeps a copy of the fd and passes it to the next instance (LISTEN_FDS).</summary>
    /// <exception cref="ArgumentException">The name is not a valid FDNAME.</exception>
    public int StoreFd(string name, SafeHandle fd)
    {
        ArgumentNullException.ThrowIfNull(fd);
        ThrowIfInvalidFdName(name);
        return Send(Encoding.ASCII.GetBytes($"FDSTORE=1\nFDNAME={name}"), [fd]);
    }

    /// <summary>FDSTOREREMOVE=1 with FDNAME=<paramref name="name"/>: systemd closes its copies of the fds stored under that name (systemd 236 and later).</summary>
    public int RemoveFd(string name)
    {
        ThrowIfInvalidFdName(name);
        return Send(Encoding.ASCII.GetBytes($"FDSTOREREMOVE=1\nFDNAME={name}"), []);
    }

    /// <summary>systemd's fdname_is_valid: 1 to 255 printable ASCII characters, no ':' (the LISTEN_FDNAMES separator).</summary>
    public static bool IsValidFdName(string? name)
    {
        if (string.IsNullOrEmpty(name) || name.Length > MaxFdNameLength)
        {
            return false;
        }
        foreach (char c in name)
        {
            if (c < 0x20 || c >= 0x7F || c == ':')
            {
                return false;
            }
        }
        return true;
    }

    public void Dispose() => _socket.Dispose();

    private static void ThrowIfInvalidFdName(string name)
    {
        if (!IsValidFdName(name))
        {
            throw new ArgumentException($"'{name}' is not a valid systemd FDNAME.", nameof(name));
        }
    }

    private int Send(ReadOnlySpan<byte> message, ReadOnlySpan<SafeHandle> fds)
    {
        fixed (sockaddr_un* address = &_address)
        {
            try
            {
                int rc = UnixSocket.Send(_socket, address, _addressLength, message, fds);
                return rc < 0 ? rc : 0;
            }
            catch (ObjectDisposedException)
            {
                return -UnixSocket.EBADF;
            }
        }
    }
}
