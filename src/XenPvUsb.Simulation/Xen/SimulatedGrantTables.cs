using System.Runtime.InteropServices;
using XenPvUsb.Xen;

namespace XenPvUsb.Simulation.Xen;

/// <summary>
/// The grant tables of a simulated host. Strict like Xen: only refs granted to the mapping domain
/// map; a read-only grant cannot be mapped writable or copied into; segments stay inside one
/// 4096-byte page; a grant still mapped (or being copied) cannot be ended.
/// </summary>
public sealed class SimulatedGrantTables
{
    public const int PageSize = 4096;

    private readonly Dictionary<DomId, GuestGrantTable> _tables = new();
    private readonly Lock _lock = new();

    /// <summary>The grant table of a guest (created on first use).</summary>
    public GuestGrantTable ForDomain(DomId guest)
    {
        lock (_lock)
        {
            if (!_tables.TryGetValue(guest, out GuestGrantTable? table))
            {
                table = new GuestGrantTable(guest);
                _tables.Add(guest, table);
            }
            return table;
        }
    }

    /// <summary>Domain death: every grant of that domain is revoked and its pages freed once unmapped.</summary>
    public void DestroyDomain(DomId guest)
    {
        GuestGrantTable? table;
        lock (_lock)
        {
            if (_tables.Remove(guest, out table))
            {
                table.Destroy();
            }
        }
    }

    /// <summary>The view a backend domain has: what libxengnttab gives dom0.</summary>
    public IGrantTable OpenAs(DomId self) => new BackendView(this, self);

    private GuestGrantTable? Find(DomId guest)
    {
        lock (_lock)
        {
            return _tables.GetValueOrDefault(guest);
        }
    }

    private sealed class BackendView : IGrantTable
    {
        private readonly SimulatedGrantTables _owner;
        private readonly DomId _self;

        public BackendView(SimulatedGrantTables owner, DomId self)
        {
            _owner = owner;
            _self = self;
        }

        public GrantMapping Map(DomId domain, GrantRef gref, bool writable)
        {
            GuestGrantTable table = _owner.Find(domain) ?? throw new GrantException($"map of ref {gref} of dom{domain}: no such domain", GrantStatus.BadDomain);
            return table.Map(_self, gref, writable);
        }

        public GrantMapping Map(DomId domain, ReadOnlySpan<GrantRef> refs, bool writable)
        {
            GuestGrantTable table = _owner.Find(domain) ?? throw new GrantException($"map of {refs.Length} refs of dom{domain}: no such domain", GrantStatus.BadDomain);
            return table.Map(_self, refs, writable);
        }

        public bool Copy(DomId domain, Span<GrantCopySegment> segments)
        {
            GuestGrantTable? table = _owner.Find(domain);
            bool ok = true;
            for (int i = 0; i < segments.Length; i++)
            {
                ref GrantCopySegment seg = ref segments[i];
                seg.Status = table is null ? GrantStatus.BadDomain : table.Copy(_self, ref seg);
                ok &= seg.Status == GrantStatus.Okay;
            }
            return ok;
        }

        public void Dispose()
        {
        }
    }
}

/// <summary>One guest's grant table and the pages it owns.</summary>
public sealed unsafe class GuestGrantTable
{
    private readonly Lock _lock = new();
    private readonly Dictionary<uint, Entry> _entries = new();
    private uint _nextRef = 8; // refs 0-7 are reserved in Linux guests (GNTTAB_NR_RESERVED_ENTRIES)
    private bool _destroyed;

    internal GuestGrantTable(DomId domain)
    {
        Domain = domain;
    }

    public DomId Domain { get; }

    /// <summary>Grants one page to <paramref name="grantee"/> (gnttab_grant_foreign_access).</summary>
    public GrantRef Grant(DomId grantee, nint page, bool readOnly)
    {
        if (page == 0 || page % SimulatedGrantTables.PageSize != 0)
        {
            throw new ArgumentException("grants are of whole, page-aligned pages", nameof(page));
        }
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_destroyed, this);
            uint r = _nextRef++;
            _entries.Add(r, new Entry(grantee, page, readOnly));
            return new GrantRef(r);
        }
    }

    /// <summary>gnttab_try_end_foreign_access: false (and the grant stays) while the grantee still maps it.</summary>
    public bool TryEndAccess(GrantRef gref)
    {
        lock (_lock)
        {
            if (!_entries.TryGetValue(gref.Value, out Entry? e))
            {
                return true;
            }
            if (e.InUse > 0)
            {
                return false;
            }
            _entries.Remove(gref.Value);
            return true;
        }
    }

    /// <summary>How many grants this guest has outstanding (for leak checks).</summary>
    public int ActiveGrants
    {
        get
        {
            lock (_lock)
            {
                return _entries.Count;
            }
        }
    }

    /// <summary>How many of this guest's grants are mapped right now.</summary>
    public int MappedGrants
    {
        get
        {
            lock (_lock)
            {
                int n = 0;
                foreach (Entry e in _entries.Values)
                {
                    n += e.InUse > 0 ? 1 : 0;
                }
                return n;
            }
        }
    }

    /// <summary>Allocates a zeroed, page-aligned page of guest memory.</summary>
    public static nint AllocPage()
    {
        void* p = NativeMemory.AlignedAlloc(SimulatedGrantTables.PageSize, SimulatedGrantTables.PageSize);
        NativeMemory.Clear(p, SimulatedGrantTables.PageSize);
        return (nint)p;
    }

    public static void FreePage(nint page) => NativeMemory.AlignedFree((void*)page);

    internal GrantMapping Map(DomId mapper, GrantRef gref, bool writable)
    {
        lock (_lock)
        {
            Entry e = Check(mapper, gref, writable, out short status)
                ?? throw new GrantException($"map of ref {gref} of dom{Domain} by dom{mapper} refused (GNTST {status})", status);
            e.InUse++;
            return new Mapping(this, gref.Value, e.Page);
        }
    }

    /// <summary>
    /// Several pages at consecutive addresses. Separate heap pages cannot be aliased into one range, so
    /// the simulation maps a bounce block: the pages are copied in at map time and, for a writable
    /// mapping, back at unmap time. A backend sees the same thing as with real gntdev as long as the
    /// guest leaves the pages alone while they are mapped, which the protocol requires anyway.
    /// </summary>
    internal GrantMapping Map(DomId mapper, ReadOnlySpan<GrantRef> refs, bool writable)
    {
        if (refs.Length == 1)
        {
            return Map(mapper, refs[0], writable);
        }
        ArgumentOutOfRangeException.ThrowIfZero(refs.Length);
        lock (_lock)
        {
            var entries = new Entry[refs.Length];
            for (int i = 0; i < refs.Length; i++)
            {
                entries[i] = Check(mapper, refs[i], writable, out short status)
                    ?? throw new GrantException($"map of ref {refs[i]} of dom{Domain} by dom{mapper} refused (GNTST {status})", status);
            }
            int size = refs.Length * SimulatedGrantTables.PageSize;
            byte* block = (byte*)NativeMemory.AlignedAlloc((nuint)size, SimulatedGrantTables.PageSize);
            for (int i = 0; i < entries.Length; i++)
            {
                entries[i].InUse++;
                Buffer.MemoryCopy((void*)entries[i].Page, block + (i * SimulatedGrantTables.PageSize), SimulatedGrantTables.PageSize, SimulatedGrantTables.PageSize);
            }
            return new BounceMapping(this, entries, (nint)block, writable);
        }
    }

    internal short Copy(DomId copier, ref GrantCopySegment seg)
    {
        if (seg.Offset + seg.Length > SimulatedGrantTables.PageSize || seg.Local == 0)
        {
            return GrantStatus.BadCopyArg;
        }
        lock (_lock)
        {
            Entry? e = Check(copier, seg.Ref, seg.ToGuest, out short status);
            if (e is null)
            {
                return status;
            }
            byte* guest = (byte*)e.Page + seg.Offset;
            if (seg.ToGuest)
            {
                Buffer.MemoryCopy((void*)seg.Local, guest, seg.Length, seg.Length);
            }
            else
            {
                Buffer.MemoryCopy(guest, (void*)seg.Local, seg.Length, seg.Length);
            }
            return GrantStatus.Okay;
        }
    }

    internal void Destroy()
    {
        lock (_lock)
        {
            _destroyed = true;
            _entries.Clear();
        }
    }

    private Entry? Check(DomId requester, GrantRef gref, bool write, out short status)
    {
        if (_destroyed)
        {
            status = GrantStatus.BadDomain;
            return null;
        }
        if (!_entries.TryGetValue(gref.Value, out Entry? e) || e.Grantee != requester)
        {
            status = GrantStatus.BadGntref;
            return null;
        }
        if (write && e.ReadOnly)
        {
            status = GrantStatus.PermissionDenied;
            return null;
        }
        status = GrantStatus.Okay;
        return e;
    }

    private void Unmap(uint gref)
    {
        lock (_lock)
        {
            if (_entries.TryGetValue(gref, out Entry? e) && e.InUse > 0)
            {
                e.InUse--;
            }
        }
    }

    private void UnmapBounce(Entry[] entries, nint block, bool writable)
    {
        lock (_lock)
        {
            for (int i = 0; i < entries.Length; i++)
            {
                Entry e = entries[i];
                // A destroyed guest's pages may be gone; only live grants get the data back.
                bool live = !_destroyed && _entries.ContainsValue(e);
                if (writable && live)
                {
                    Buffer.MemoryCopy((byte*)block + (i * SimulatedGrantTables.PageSize), (void*)e.Page, SimulatedGrantTables.PageSize, SimulatedGrantTables.PageSize);
                }
                if (e.InUse > 0)
                {
                    e.InUse--;
                }
            }
        }
        NativeMemory.AlignedFree((void*)block);
    }

    private sealed class Entry
    {
        public Entry(DomId grantee, nint page, bool readOnly)
        {
            Grantee = grantee;
            Page = page;
            ReadOnly = readOnly;
        }

        public DomId Grantee { get; }

        public nint Page { get; }

        public bool ReadOnly { get; }

        public int InUse { get; set; }
    }

    private sealed class Mapping : GrantMapping
    {
        private readonly GuestGrantTable _table;
        private readonly uint _ref;

        public Mapping(GuestGrantTable table, uint gref, nint page) : base(page, SimulatedGrantTables.PageSize)
        {
            _table = table;
            _ref = gref;
        }

        protected override void Unmap(nint address) => _table.Unmap(_ref);
    }

    private sealed class BounceMapping : GrantMapping
    {
        private readonly GuestGrantTable _table;
        private readonly Entry[] _entries;
        private readonly bool _writable;

        public BounceMapping(GuestGrantTable table, Entry[] entries, nint block, bool writable)
            : base(block, entries.Length * SimulatedGrantTables.PageSize)
        {
            _table = table;
            _entries = entries;
            _writable = writable;
        }

        protected override void Unmap(nint address) => _table.UnmapBounce(_entries, address, _writable);
    }
}
