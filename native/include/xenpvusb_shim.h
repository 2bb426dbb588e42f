/* SPDX-License-Identifier: MIT */
/*
 * XenPvUsb native shim: a thin, boring veneer over Xen's libxengnttab and libxenevtchn, so the
 * managed daemon binds to a small, fixed, prefixed ABI instead of Xen's headers. No logic, no
 * allocation policy, no logging. Every export uses fixed-width types, returns 0 / -1 (or a
 * handle / pointer, NULL on failure) and leaves errno set on failure.
 */
#ifndef XENPVUSB_SHIM_H
#define XENPVUSB_SHIM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Grant-copy segment, layout-identical to xengnttab_grant_copy_segment_t (checked at build time). */
typedef struct XenPvUsbShimGrantCopySegment {
    uint64_t source; /* union: local pointer, or { uint32 ref; uint16 offset; uint16 domid } */
    uint64_t dest;   /* same union */
    uint16_t len;
    uint16_t flags; /* GNTCOPY_source_gref = 1, GNTCOPY_dest_gref = 2 */
    int16_t status; /* GNTST_* out */
    uint16_t pad;
} XenPvUsbShimGrantCopySegment;

/* Implemented as shim to xengnttab_open(NULL, 0). Returns a handle or NULL; sets errno. */
void *XenPvUsbShim_GntOpen(void);

/* Implemented as shim to xengnttab_close. Returns 0 or -1; sets errno. */
int32_t XenPvUsbShim_GntClose(void *handle);

/*
 * Implemented as shim to xengnttab_map_domain_grant_refs: maps `count` refs of `domid`, contiguous,
 * PROT_READ (|PROT_WRITE when `writable`). Returns the address or NULL; sets errno.
 */
void *XenPvUsbShim_GntMapDomainGrantRefs(void *handle, uint32_t count, uint32_t domid, const uint32_t *refs,
                                         int32_t writable);

/* Implemented as shim to xengnttab_unmap(start, count). Returns 0 or -1; sets errno. */
int32_t XenPvUsbShim_GntUnmap(void *handle, void *start, uint32_t count);

/*
 * Implemented as shim to xengnttab_grant_copy. Returns 0 when every segment was processed (check
 * each status) or -1 (statuses undefined); sets errno.
 */
int32_t XenPvUsbShim_GntGrantCopy(void *handle, uint32_t count, XenPvUsbShimGrantCopySegment *segments);

/* Implemented as shim to xenevtchn_open(NULL, 0). Returns a handle or NULL; sets errno. */
void *XenPvUsbShim_EvtchnOpen(void);

/* Implemented as shim to xenevtchn_close. Returns 0 or -1; sets errno. */
int32_t XenPvUsbShim_EvtchnClose(void *handle);

/* Implemented as shim to xenevtchn_fd. Returns the pollable fd or -1. */
int32_t XenPvUsbShim_EvtchnFd(void *handle);

/* Implemented as shim to xenevtchn_bind_interdomain. Returns the local port or -1; sets errno. */
int32_t XenPvUsbShim_EvtchnBindInterdomain(void *handle, uint32_t domid, uint32_t remote_port);

/* Implemented as shim to xenevtchn_notify. Returns 0 or -1; sets errno. */
int32_t XenPvUsbShim_EvtchnNotify(void *handle, uint32_t port);

/* Implemented as shim to xenevtchn_pending. Returns a pending port or -1 (errno EAGAIN: none). */
int32_t XenPvUsbShim_EvtchnPending(void *handle);

/* Implemented as shim to xenevtchn_unmask. Returns 0 or -1; sets errno. */
int32_t XenPvUsbShim_EvtchnUnmask(void *handle, uint32_t port);

/* Implemented as shim to xenevtchn_unbind. Returns 0 or -1; sets errno. */
int32_t XenPvUsbShim_EvtchnUnbind(void *handle, uint32_t port);

#ifdef __cplusplus
}
#endif

#endif
