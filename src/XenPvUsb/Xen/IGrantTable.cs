namespace XenPvUsb.Xen;

/// <summary>
/// Access to pages other domains granted to us (libxengnttab in real mode). One instance serves a
/// whole daemon; it is safe to call from any thread.
/// </summary>
public interface IGrantTable : IDisposable
{
    /// <summary>Maps one granted page. Throws <see cref="GrantException"/> if the grant is not valid for us.</summary>
    GrantMapping Map(DomId domain, GrantRef gref, bool writable);

    /// <summary>
    /// Maps several granted pages at consecutive addresses, in order (xengnttab_map_domain_grant_refs),
    /// so a buffer spread over them is one range. All or nothing: throws <see cref="GrantException"/>
    /// if any grant is not valid for us.
    /// </summary>
    GrantMapping Map(DomId domain, ReadOnlySpan<GrantRef> refs, bool writable);

    /// <summary>
    /// Grant copy (xengnttab_grant_copy): each segment moves bytes between a guest page and a local
    /// buffer. Statuses are written into the segments (<see cref="GrantCopySegment.Status"/>, GNTST_*).
    /// Returns true if every segment succeeded.
    /// </summary>
    bool Copy(DomId domain, Span<GrantCopySegment> segments);
}

/// <summary>One grant-copy operation; a guest-page side and a local-buffer side.</summary>
public struct GrantCopySegment
{
    public GrantRef Ref;
    public ushort Offset;
    public ushort Length;

    /// <summary>True: local buffer → guest page (IN data). False: guest page → local buffer (OUT data).</summary>
    public bool ToGuest;

    public nint Local;

    /// <summary>GNTST_* result, 0 = okay.</summary>
    public short Status;
}

/// <summary>GNTST_* (xen/include/public/grant_table.h).</summary>
public static class GrantStatus
{
    public const short Okay = 0;
    public const short GeneralError = -1;
    public const short BadDomain = -2;
    public const short BadGntref = -3;
    public const short BadHandle = -4;
    public const short BadVirtAddr = -5;
    public const short BadCopyArg = -10;
    public const short PermissionDenied = -8;
}
