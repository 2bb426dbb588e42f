using Microsoft.Win32.SafeHandles;

namespace XenPvUsb.Host;

/// <summary>A file descriptor handed over by systemd at start (LISTEN_FDS), with its FDNAME.</summary>
public sealed class InheritedFd(string name, SafeFileHandle handle)
{
    public string Name { get; } = name;

    /// <summary>Owns the fd; whoever takes it over disposes it (or adopts it into another handle).</summary>
    public SafeFileHandle Handle { get; } = handle;
}
