using System.Runtime.InteropServices;
using XenPvUsb.Interop;
using XenPvUsb.Tests.Support;
using XenPvUsb.Xen;
using ShimApi = XenPvUsb.Interop.Shim.Shim;

namespace XenPvUsb.Tests.Interop;

/// <summary>The native shim's ABI against Xen's own headers, and the managed bindings against the built library.</summary>
[TestFixture]
public sealed class ShimTests
{
    [Test]
    public void GrantCopySegment_MatchesLibxengnttab()
    {
        Dictionary<string, long> c = CProgram.Run("""
            #include <stdio.h>
            #include <stddef.h>
            #include <xengnttab.h>
            int main(void) {
                xengnttab_grant_copy_segment_t s;
                printf("size=%zu\n", sizeof s);
                printf("source=%zu\n", offsetof(xengnttab_grant_copy_segment_t, source));
                printf("dest=%zu\n", offsetof(xengnttab_grant_copy_segment_t, dest));
                printf("len=%zu\n", offsetof(xengnttab_grant_copy_segment_t, len));
                printf("flags=%zu\n", offsetof(xengnttab_grant_copy_segment_t, flags));
                printf("status=%zu\n", offsetof(xengnttab_grant_copy_segment_t, status));
                printf("ref=%zu\n", offsetof(xengnttab_grant_copy_segment_t, source.foreign.ref));
                printf("offset=%zu\n", offsetof(xengnttab_grant_copy_segment_t, source.foreign.offset));
                printf("domid=%zu\n", offsetof(xengnttab_grant_copy_segment_t, source.foreign.domid));
                printf("GNTCOPY_source_gref=%d\n", GNTCOPY_source_gref);
                printf("GNTCOPY_dest_gref=%d\n", GNTCOPY_dest_gref);
                return 0;
            }
            """);
        Assert.That(Marshal.SizeOf<ShimApi.GrantCopySegment>(), Is.EqualTo(c["size"]));
        Assert.That((long)Marshal.OffsetOf<ShimApi.GrantCopySegment>("source"), Is.EqualTo(c["source"]));
        Assert.That((long)Marshal.OffsetOf<ShimApi.GrantCopySegment>("dest"), Is.EqualTo(c["dest"]));
        Assert.That((long)Marshal.OffsetOf<ShimApi.GrantCopySegment>("len"), Is.EqualTo(c["len"]));
        Assert.That((long)Marshal.OffsetOf<ShimApi.GrantCopySegment>("flags"), Is.EqualTo(c["flags"]));
        Assert.That((long)Marshal.OffsetOf<ShimApi.GrantCopySegment>("status"), Is.EqualTo(c["status"]));
        Assert.That((c["ref"], c["offset"], c["domid"]), Is.EqualTo((0L, 4L, 6L)), "Shim.Foreign packs ref | offset << 32 | domid << 48");
        Assert.That(c["GNTCOPY_source_gref"], Is.EqualTo(ShimApi.GNTCOPY_source_gref));
        Assert.That(c["GNTCOPY_dest_gref"], Is.EqualTo(ShimApi.GNTCOPY_dest_gref));
    }

    [Test]
    public void Foreign_PacksLikeTheCUnion()
    {
        Assert.That(ShimApi.Foreign(0x11223344, 0x5566, 0x7788), Is.EqualTo(0x7788_5566_11223344UL));
    }

    [Test]
    public void BuiltShim_LoadsAndReportsMissingXenDevices()
    {
        string shim = Path.Combine(AppContext.BaseDirectory, Libraries.Shim);
        Assert.That(File.Exists(shim), Is.True, "make builds native/ before the tests and the test project copies the shim");
        Libraries.UseShimBesideExecutable();
        if (File.Exists("/dev/xen/gntdev"))
        {
            Assert.Ignore("this machine is a Xen domain; the lab covers real grant tables");
        }
        // No /dev/xen here: the call goes through the shim into libxengnttab and fails with errno.
        GrantException e = Assert.Throws<GrantException>(() => new XenGrantTable().Dispose())!;
        Assert.That(e.Status, Is.Negative);
        Assert.That(() => new XenEventChannels().BindInterdomain(new DomId(1), new EvtchnPort(5)), Throws.TypeOf<EventChannelException>());
    }
}
