using System.Runtime.InteropServices;
using XenPvUsb.Interop.Shim;

namespace XenPvUsb.Xen;

/// <summary>
/// Event channels of a real Xen host, through libxenevtchn (via the native shim and /dev/xen/evtchn).
/// Each bound channel has its own handle, so its fd is readable exactly when that channel fired.
/// </summary>
public sealed class XenEventChannels : IEventChannelFactory
{
    public IEventChannel BindInterdomain(DomId remoteDomain, EvtchnPort remotePort)
    {
        nint h = Shim.XenPvUsbShim_EvtchnOpen();
        if (h == 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw new EventChannelException($"xenevtchn_open failed: errno {errno}", errno);
        }
        int local = Shim.XenPvUsbShim_EvtchnBindInterdomain(h, remoteDomain.Value, remotePort.Value);
        if (local < 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            Shim.XenPvUsbShim_EvtchnClose(h);
            throw new EventChannelException($"bind_interdomain(dom{remoteDomain}, port {remotePort}) failed: errno {errno}", errno);
        }
        return new Channel(h, new EvtchnPort((uint)local), Shim.XenPvUsbShim_EvtchnFd(h));
    }

    private sealed class Channel : IEventChannel
    {
        private nint _handle;

        public Channel(nint handle, EvtchnPort local, int fd)
        {
            _handle = handle;
            LocalPort = local;
            Fd = fd;
        }

        public int Fd { get; }

        public EvtchnPort LocalPort { get; }

        /// <summary>Called when the fd is readable: one read gives the pending port, which is then unmasked.</summary>
        public bool ConsumePending()
        {
            int port = Shim.XenPvUsbShim_EvtchnPending(_handle);
            if (port < 0)
            {
                return false;
            }
            Shim.XenPvUsbShim_EvtchnUnmask(_handle, (uint)port);
            return true;
        }

        public void Notify() => Shim.XenPvUsbShim_EvtchnNotify(_handle, LocalPort.Value);

        public void Dispose()
        {
            nint h = Interlocked.Exchange(ref _handle, 0);
            if (h != 0)
            {
                Shim.XenPvUsbShim_EvtchnUnbind(h, LocalPort.Value);
                Shim.XenPvUsbShim_EvtchnClose(h);
            }
        }
    }
}
