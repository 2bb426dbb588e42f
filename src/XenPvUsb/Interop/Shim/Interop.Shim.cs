using System.Runtime.InteropServices;

namespace XenPvUsb.Interop.Shim;

/// <summary>XenPvUsbShim_* exports (native/include/xenpvusb_shim.h); each one is 1:1 with a libxengnttab or libxenevtchn call.</summary>
internal static unsafe partial class Shim
{
    /// <summary>XenPvUsbShimGrantCopySegment, layout-identical to xengnttab_grant_copy_segment_t.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct GrantCopySegment
    {
        public ulong source;
        public ulong dest;
        public ushort len;
        public ushort flags;
        public short status;
        public ushort pad;
    }

    public const ushort GNTCOPY_source_gref = 1;
    public const ushort GNTCOPY_dest_gref = 2;

    /// <summary>The foreign side of a copy segment: { uint32 ref; uint16 offset; uint16 domid }.</summary>
    public static ulong Foreign(uint gref, ushort offset, ushort domid) => gref | ((ulong)offset << 32) | ((ulong)domid << 48);

    [LibraryImport(Libraries.Shim, SetLastError = true)]
    public static partial nint XenPvUsbShim_GntOpen();

    [LibraryImport(Libraries.Shim, SetLastError = true)]
    public static partial int XenPvUsbShim_GntClose(nint handle);

    [LibraryImport(Libraries.Shim, SetLastError = true)]
    public static partial nint XenPvUsbShim_GntMapDomainGrantRefs(nint handle, uint count, uint domid, uint* refs, int writable);

    [LibraryImport(Libraries.Shim, SetLastError = true)]
    public static partial int XenPvUsbShim_GntUnmap(nint handle, nint start, uint count);

    [LibraryImport(Libraries.Shim, SetLastError = true)]
    public static partial int XenPvUsbShim_GntGrantCopy(nint handle, uint count, GrantCopySegment* segments);

    [LibraryImport(Libraries.Shim, SetLastError = true)]
    public static partial nint XenPvUsbShim_EvtchnOpen();

    [LibraryImport(Libraries.Shim, SetLastError = true)]
    public static partial int XenPvUsbShim_EvtchnClose(nint handle);

    [LibraryImport(Libraries.Shim, SetLastError = true)]
    public static partial int XenPvUsbShim_EvtchnFd(nint handle);

    [LibraryImport(Libraries.Shim, SetLastError = true)]
    public static partial int XenPvUsbShim_EvtchnBindInterdomain(nint handle, uint domid, uint remotePort);

    [LibraryImport(Libraries.Shim, SetLastError = true)]
    public static partial int XenPvUsbShim_EvtchnNotify(nint handle, uint port);

    [LibraryImport(Libraries.Shim, SetLastError = true)]
    public static partial int XenPvUsbShim_EvtchnPending(nint handle);

    [LibraryImport(Libraries.Shim, SetLastError = true)]
    public static partial int XenPvUsbShim_EvtchnUnmask(nint handle, uint port);

    [LibraryImport(Libraries.Shim, SetLastError = true)]
    public static partial int XenPvUsbShim_EvtchnUnbind(nint handle, uint port);
}
