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

    public GrantMapping Map(DomId domain, GrantRef gref, bool writable)
    {
        uint r = gref.Value;
        nint addr = Shim.XenPvUsbShim_GntMapDomainGrantRefs(_handle, 1, domain.Value, &r, writable ? 1 : 0);
        if (addr == 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw new GrantException($"map of grant {gref} of dom{domain} failed: errno {errno}", -errno);
        }
        return new Mapping(this, addr);
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

        public Mapping(XenGrantTable owner, nint address) : base(address, 4096)
        {
            _owner = owner;
        }

        protected override void Unmap(nint address) => Shim.XenPvUsbShim_GntUnmap(_owner._handle, address, 1);
    }
}
