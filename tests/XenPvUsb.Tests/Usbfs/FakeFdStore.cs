using System.Runtime.InteropServices;
using XenPvUsb.Host;

namespace XenPvUsb.Tests.Usbfs;

/// <summary>An <see cref="IFdStore"/> that records what is stored and removed, and hands over what a test put in "from before".</summary>
internal sealed class FakeFdStore : IFdStore
{
    private readonly Lock _lock = new();
    private readonly List<InheritedFd> _inherited = new();
    private readonly List<string> _log = new();
    private readonly Dictionary<string, SafeHandle> _stored = new(StringComparer.Ordinal);

    /// <summary>"add name" / "remove name" in order.</summary>
    public string[] Log
    {
        get
        {
            lock (_lock)
            {
                return [.. _log];
            }
        }
    }

    public string[] StoredNames
    {
        get
        {
            lock (_lock)
            {
                return [.. _stored.Keys];
            }
        }
    }

    public SafeHandle? Stored(string name)
    {
        lock (_lock)
        {
            return _stored.GetValueOrDefault(name);
        }
    }

    /// <summary>An fd the "previous daemon" stored under <paramref name="name"/> (an open /dev/null stands in for it).</summary>
    public void Inherit(string name)
    {
        lock (_lock)
        {
            _inherited.Add(new InheritedFd(name, File.OpenHandle("/dev/null")));
            _stored[name] = _inherited[^1].Handle;
        }
    }

    public IReadOnlyList<InheritedFd> TakeInherited(string namePrefix)
    {
        lock (_lock)
        {
            List<InheritedFd> taken = _inherited.FindAll(f => f.Name.StartsWith(namePrefix, StringComparison.Ordinal));
            _inherited.RemoveAll(f => f.Name.StartsWith(namePrefix, StringComparison.Ordinal));
            return taken;
        }
    }

    public int Add(string name, SafeHandle fd)
    {
        lock (_lock)
        {
            _log.Add($"add {name}");
            _stored[name] = fd;
            return 0;
        }
    }

    public int Remove(string name)
    {
        lock (_lock)
        {
            _log.Add($"remove {name}");
            _stored.Remove(name);
            return 0;
        }
    }
}
