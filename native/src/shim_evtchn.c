/* SPDX-License-Identifier: MIT */
#include <stddef.h>
#include <xenevtchn.h>

#include "xenpvusb_shim.h"

void *XenPvUsbShim_EvtchnOpen(void)
{
    return xenevtchn_open(NULL, 0);
}

int32_t XenPvUsbShim_EvtchnClose(void *handle)
{
    return xenevtchn_close((xenevtchn_handle *)handle);
}

int32_t XenPvUsbShim_EvtchnFd(void *handle)
{
    return xenevtchn_fd((xenevtchn_handle *)handle);
}

int32_t XenPvUsbShim_EvtchnBindInterdomain(void *handle, uint32_t domid, uint32_t remote_port)
{
    return xenevtchn_bind_interdomain((xenevtchn_handle *)handle, domid, remote_port);
}

int32_t XenPvUsbShim_EvtchnNotify(void *handle, uint32_t port)
{
    return xenevtchn_notify((xenevtchn_handle *)handle, port);
}

int32_t XenPvUsbShim_EvtchnPending(void *handle)
{
    return xenevtchn_pending((xenevtchn_handle *)handle);
}

int32_t XenPvUsbShim_EvtchnUnmask(void *handle, uint32_t port)
{
    return xenevtchn_unmask((xenevtchn_handle *)handle, port);
}

int32_t XenPvUsbShim_EvtchnUnbind(void *handle, uint32_t port)
{
    return xenevtchn_unbind((xenevtchn_handle *)handle, port);
}
