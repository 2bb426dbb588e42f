/* SPDX-License-Identifier: MIT */
#include <stddef.h>
#include <sys/mman.h>
#include <xengnttab.h>

#include "xenpvusb_shim.h"

_Static_assert(sizeof(XenPvUsbShimGrantCopySegment) == sizeof(xengnttab_grant_copy_segment_t),
               "grant copy segment size");
_Static_assert(offsetof(XenPvUsbShimGrantCopySegment, len) == offsetof(xengnttab_grant_copy_segment_t, len),
               "len offset");
_Static_assert(offsetof(XenPvUsbShimGrantCopySegment, flags) == offsetof(xengnttab_grant_copy_segment_t, flags),
               "flags offset");
_Static_assert(offsetof(XenPvUsbShimGrantCopySegment, status) == offsetof(xengnttab_grant_copy_segment_t, status),
               "status offset");

void *XenPvUsbShim_GntOpen(void)
{
    return xengnttab_open(NULL, 0);
}

int32_t XenPvUsbShim_GntClose(void *handle)
{
    return xengnttab_close((xengnttab_handle *)handle);
}

void *XenPvUsbShim_GntMapDomainGrantRefs(void *handle, uint32_t count, uint32_t domid, const uint32_t *refs,
                                         int32_t writable)
{
    return xengnttab_map_domain_grant_refs((xengnttab_handle *)handle, count, domid, (uint32_t *)refs,
                                           writable ? PROT_READ | PROT_WRITE : PROT_READ);
}

int32_t XenPvUsbShim_GntUnmap(void *handle, void *start, uint32_t count)
{
    return xengnttab_unmap((xengnttab_handle *)handle, start, count);
}

int32_t XenPvUsbShim_GntGrantCopy(void *handle, uint32_t count, XenPvUsbShimGrantCopySegment *segments)
{
    return xengnttab_grant_copy((xengnttab_handle *)handle, count, (xengnttab_grant_copy_segment_t *)segments);
}
