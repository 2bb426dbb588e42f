using System.IO.MemoryMappedFiles;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using XenPvUsb.Usbif;

namespace XenPvUsb.Backend;

/// <summary>
/// What a successor daemon needs to re-adopt a connected controller (design.md, "Restart is normal"),
/// as one consistent snapshot: the private ring indexes, the ids of the requests consumed and not
/// answered, and per port the guest's device address and the speed the guest was last told. Every
/// request below <see cref="UrbReqCons"/> is either answered in a response slot below
/// <see cref="UrbRspProdPvt"/> (written before the snapshot) or listed in flight.
/// </summary>
[StructLayout(LayoutKind.Sequential, Pack = 4)]
internal unsafe struct ControllerSnapshot
{
    public const int MaxInFlight = Usbif.Usbif.USB_URB_RING_SIZE;
    public const int PortSlots = Usbif.Usbif.USBIF_MAX_PORTNR + 1;

    public uint UrbReqCons;
    public uint UrbRspProdPvt;
    public uint ConnReqCons;
    public uint ConnRspProdPvt;
    public int InFlightCount;
    public fixed ushort InFlight[MaxInFlight];
    public fixed byte Address[PortSlots];
    public fixed byte AnnouncedSpeed[PortSlots];
}

/// <summary>
/// The recovery state of one controller in a small file in the daemon's runtime directory
/// (/run/xenpvusb: tmpfs, so it survives the daemon, not the host), mapped shared: the data path
/// writes a snapshot with plain stores, no system call, and what the process wrote is there for a
/// successor even after SIGKILL. Two copies and a sequence number: a copy is written whole before
/// the number moves to it, so a crash mid-write leaves the previous snapshot current. The header
/// names the connection (domain, device, ring refs, event channel) the snapshot belongs to.
/// </summary>
/// <remarks>Loop thread only, like the controller that owns it.</remarks>
internal sealed unsafe class ControllerJournal : IDisposable
{
    private const uint Magic = 0x4A565058; // "XPVJ"
    private const uint Version = 1;
    private const int FileSize = 4096;
    private const int CopyOffset = 64;
    private const int CopyStride = 512;

    private readonly MemoryMappedFile _file;
    private readonly MemoryMappedViewAccessor _view;
    private readonly byte* _base;
    private bool _disposed;

    static ControllerJournal()
    {
        if (sizeof(ControllerSnapshot) > CopyStride)
        {
            throw new InvalidOperationException("snapshot larger than its slot");
        }
    }

    private ControllerJournal(string path, MemoryMappedFile file, MemoryMappedViewAccessor view)
    {
        Path = path;
        _file = file;
        _view = view;
        byte* p = null;
        view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
        _base = p + view.PointerOffset;
    }

    public string Path { get; }

    private ref Header Head => ref Unsafe.AsRef<Header>(_base);

    public static string PathFor(string directory, int domId, int devId) => System.IO.Path.Combine(directory, $"vusb-{domId}-{devId}.state");

    /// <summary>Starts a fresh journal for a new connection (any old one is overwritten).</summary>
    public static ControllerJournal Create(string directory, int domId, int devId, uint urbRef, uint connRef, uint remotePort)
    {
        Directory.CreateDirectory(directory);
        string path = PathFor(directory, domId, devId);
        ControllerJournal j = Map(path);
        ref Header h = ref j.Head;
        h.Magic = 0; // not valid until filled in
        h.DomId = (ushort)domId;
        h.DevId = (ushort)devId;
        h.UrbRef = urbRef;
        h.ConnRef = connRef;
        h.RemotePort = remotePort;
        h.Sequence = 0;
        ControllerSnapshot empty = default;
        j.CopyIn(0, in empty);
        h.Version = Version;
        Volatile.Write(ref h.Magic, Magic);
        return j;
    }

    /// <summary>
    /// Opens the journal a predecessor left for this controller, if it belongs to the connection the
    /// frontend advertises now (same ring refs and event channel); null otherwise.
    /// </summary>
    public static ControllerJournal? TryOpen(string directory, int domId, int devId, uint urbRef, uint connRef, uint remotePort, out ControllerSnapshot snapshot)
    {
        snapshot = default;
        string path = PathFor(directory, domId, devId);
        if (!File.Exists(path) || new FileInfo(path).Length != FileSize)
        {
            return null;
        }
        ControllerJournal j = Map(path);
        ref Header h = ref j.Head;
        if (Volatile.Read(ref h.Magic) != Magic || h.Version != Version || h.DomId != domId || h.DevId != devId
            || h.UrbRef != urbRef || h.ConnRef != connRef || h.RemotePort != remotePort)
        {
            j.Dispose();
            return null;
        }
        snapshot = j.Read();
        return j;
    }

    public ControllerSnapshot Read()
    {
        uint seq = Volatile.Read(ref Head.Sequence);
        ControllerSnapshot s;
        Buffer.MemoryCopy(_base + CopyOffset + ((seq & 1) * CopyStride), &s, sizeof(ControllerSnapshot), sizeof(ControllerSnapshot));
        return s;
    }

    /// <summary>Writes <paramref name="snapshot"/> into the spare copy, then makes it current.</summary>
    public void Write(in ControllerSnapshot snapshot)
    {
        ref Header h = ref Head;
        uint next = h.Sequence + 1;
        CopyIn(next & 1, in snapshot);
        Volatile.Write(ref h.Sequence, next);
    }

    /// <summary>The connection is over for good (torn down, domain gone): no successor may adopt it.</summary>
    public void Delete()
    {
        Volatile.Write(ref Head.Magic, 0);
        Dispose();
        try
        {
            File.Delete(Path);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _file.Dispose();
    }

    private void CopyIn(uint copy, in ControllerSnapshot snapshot)
    {
        fixed (ControllerSnapshot* s = &snapshot)
        {
            Buffer.MemoryCopy(s, _base + CopyOffset + (copy * CopyStride), CopyStride, sizeof(ControllerSnapshot));
        }
    }

    private static ControllerJournal Map(string path)
    {
        using (var fs = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.ReadWrite))
        {
            if (fs.Length != FileSize)
            {
                fs.SetLength(FileSize);
            }
        }
        MemoryMappedFile file = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, FileSize, MemoryMappedFileAccess.ReadWrite);
        try
        {
            return new ControllerJournal(path, file, file.CreateViewAccessor(0, FileSize, MemoryMappedFileAccess.ReadWrite));
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct Header
    {
        public uint Magic;
        public uint Version;
        public ushort DomId;
        public ushort DevId;
        public uint UrbRef;
        public uint ConnRef;
        public uint RemotePort;
        public uint Sequence;
    }
}
