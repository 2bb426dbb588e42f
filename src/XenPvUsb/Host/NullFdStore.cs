using System.Runtime.InteropServices;

namespace XenPvUsb.Host;

/// <summary>No fd store (not under systemd): nothing is inherited, nothing is kept.</summary>
public sealed class NullFdStore : IFdStore
{
    public static NullFdStore Instance { get; } = new();

    private NullFdStore()
    {
    }

    public IReadOnlyList<InheritedFd> TakeInherited(string namePrefix) => [];

    public int Add(string name, SafeHandle fd) => 0;

    public int Remove(string name) => 0;
}
