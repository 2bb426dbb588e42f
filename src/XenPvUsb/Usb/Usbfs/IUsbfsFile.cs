using System.Runtime.InteropServices;
using XenPvUsb.Interop.Linux;

namespace XenPvUsb.Usb.Usbfs;

/// <summary>
/// The usbfs ioctls one open device node needs, as a seam so the device logic can be tested against
/// a fake. Every method returns 0 (or the ioctl's non-negative result) or -errno; none throws.
/// </summary>
internal unsafe interface IUsbfsFile : IDisposable
{
    /// <summary>The fd the event loop waits on: POLLOUT while completed URBs wait to be reaped, POLLHUP once the device is gone.</summary>
    SafeHandle Handle { get; }

    int SubmitUrb(usbdevfs_urb* urb);

    int DiscardUrb(usbdevfs_urb* urb);

    /// <summary>USBDEVFS_REAPURBNDELAY: 0 and the submitted pointer, -EAGAIN if nothing completed, -ENODEV if nothing completed and the device is gone.</summary>
    int ReapUrbNoDelay(out usbdevfs_urb* urb);

    int ClaimInterface(int interfaceNumber);

    int ReleaseInterface(int interfaceNumber);

    /// <summary>USBDEVFS_DISCONNECT_CLAIM: detach whatever driver is bound (filtered by <paramref name="flags"/>) and claim.</summary>
    int DisconnectClaim(int interfaceNumber, uint flags, string driver);

    /// <summary>USBDEVFS_IOCTL(USBDEVFS_DISCONNECT): unbind the interface's kernel driver.</summary>
    int DisconnectDriver(int interfaceNumber);

    /// <summary>
    /// USBDEVFS_IOCTL(USBDEVFS_CONNECT): let the kernel bind a driver to the interface again. Returns 1 if a
    /// driver was bound, 0 if none matched (device_attach's result), or -errno.
    /// </summary>
    int ConnectDriver(int interfaceNumber);

    int SetConfiguration(int configurationValue);

    int SetInterface(int interfaceNumber, int alternateSetting);

    int ClearHalt(int endpoint);

    int Reset();

    /// <summary>USBDEVFS_CLAIM_PORT on a hub's node (1-based port): -EBUSY if another fd owns it.</summary>
    int ClaimPort(int port);

    /// <summary>USBDEVFS_RELEASE_PORT on a hub's node: -ENOENT if this fd does not own it.</summary>
    int ReleasePort(int port);

    /// <summary>USBDEVFS_CONNINFO_EX: which device the node is (-ENOTTY on kernels before 5.6).</summary>
    int GetConnInfo(out int busNum, out int devNum);

    /// <summary>USBDEVFS_GET_SPEED: a USB_SPEED_* value or -errno.</summary>
    int GetSpeed();

    int GetCapabilities(out uint capabilities);
}
