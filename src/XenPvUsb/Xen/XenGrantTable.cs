using System.Runtime.InteropServices;
using XenPvUsb.Interop.Shim;

namespace XenPvUsb.Xen;

/// <summary>Grant tables of a real Xen host, through libxengnttab (via the native shim and /dev/xen/gntdev).</summary>
public sealed unsafe class XenGrantTable : IGrantTable
{
    private const int MaxBatch = 32;

    private nint _handle;

    public XenGrantTable()
    {
        _handle = Shim.XenPvUsbShim_GntOpen();
        if (_handle == 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw new GrantException($"xengnttab_open failed: errno {errno}", -errno);
        }
    }

    public GrantMapping Map(DomId domain, GrantRef gref, bool writable) => Map(domain, [gref], writable);

    public GrantMapping Map(DomId domain, ReadOnlySpan<GrantRef> refs, bool writable)
    {
        if (refs.IsEmpty || refs.Length > MaxBatch)
        {
            throw new ArgumentOutOfRangeException(nameof(refs), refs.Length, $"maps 1 to {MaxBatch} pages at a time");
        }
        uint* r = stackalloc uint[refs.Length];
        for (int i = 0; i < refs.Length; i++)
        {
            r[i] = refs[i].Value;
        }
        nint addr = Shim.XenPvUsbShim_GntMapDomainGrantRefs(_handle, (uint)refs.Length, domain.Value, r, writable ? 1 : 0);
        if (addr == 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw new GrantException($"map of {refs.Length} grant(s) from {refs[0]} of dom{domain} failed: errno {errno}", -errno);
        }
        return new Mapping(this, addr, refs.Length);
    }

    public bool Copy(DomId domain, Span<GrantCopySegment> segments)
    {
        bool ok = true;
        Shim.GrantCopySegment* native = stackalloc Shim.GrantCopySegment[MaxBatch];
        for (int start = 0; start < segments.Length; start += MaxBatch)
        {
            int n = Math.Min(MaxBatch, segments.Length - start);
            for (int i = 0; i < n; i++)
            {
                ref GrantCopySegment s = ref segments[start + i];
                ulong foreign = Shim.Foreign(s.Ref.Value, s.Offset, domain.Value);
                native[i] = s.ToGuest
                    ? new Shim.GrantCopySegment { source = (ulong)s.Local, dest = foreign, len = s.Length, flags = Shim.GNTCOPY_dest_gref }
                    : new Shim.GrantCopySegment { source = foreign, dest = (ulong)s.Local, len = s.Length, flags = Shim.GNTCOPY_source_gref };
            }
            bool batchFailed = Shim.XenPvUsbShim_GntGrantCopy(_handle, (uint)n, native) != 0;
            for (int i = 0; i < n; i++)
            {
                short status = batchFailed ? GrantStatus.GeneralError : native[i].status;
                segments[start + i].Status = status;
                ok &= status == GrantStatus.Okay;
            }
        }
        return ok;
    }

    public void Dispose()
    {
        nint h = Interlocked.Exchange(ref _handle, 0);
        if (h != 0)
        {
            Shim.XenPvUsbShim_GntClose(h);
        }
    }

    private sealed class Mapping : GrantMapping
    {
        private readonly XenGrantTable _owner;

        private readonly int _pages;

        public Mapping(XenGrantTable owner, nint address, int pages) : base(address, pages * 4096)
        {
            _owner = owner;
            _pages = pages;
        }

        protected override void Unmap(nint address) => Shim.XenPvUsbShim_GntUnmap(_owner._handle, address, (uint)_pages);
    }
}
