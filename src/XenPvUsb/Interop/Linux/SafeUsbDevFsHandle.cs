using System.Diagnostics;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using XenPvUsb.Usb;

namespace XenPvUsb.Interop.Linux;

/// <summary>An open usbfs node (/dev/bus/usb/BBB/DDD). Closing it releases every claim and kills every URB (§1.1).</summary>
internal sealed class SafeUsbDevFsHandle : SafeHandleMinusOneIsInvalid
{
    internal SafeUsbDevFsHandle()
        : base(ownsHandle: true)
    {
    }

    /// <summary>
    /// Opens <paramref name="path"/> O_RDWR (every usbfs ioctl needs write mode, §1.1) | O_CLOEXEC |
    /// O_NONBLOCK. Throws <see cref="UsbDeviceException"/> carrying errno, naming the path.
    /// </summary>
    public static SafeUsbDevFsHandle Open(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        int fd = UsbDevFs.Open(path, UsbDevFs.O_RDWR | UsbDevFs.O_CLOEXEC | UsbDevFs.O_NONBLOCK);
        if (fd < 0)
        {
            throw new UsbDeviceException($"open {path} failed: errno {-fd}", -fd);
        }
        var handle = new SafeUsbDevFsHandle();
        handle.SetHandle(fd);
        return handle;
    }

    /// <summary>
    /// Takes over an open usbfs fd that came from elsewhere (systemd's fd store, §LISTEN_FDS): the returned handle
    /// owns it and <paramref name="inherited"/> no longer does.
    /// </summary>
    public static SafeUsbDevFsHandle Adopt(SafeHandle inherited)
    {
        ArgumentNullException.ThrowIfNull(inherited);
        var handle = new SafeUsbDevFsHandle();
        handle.SetHandle(inherited.DangerousGetHandle());
        inherited.SetHandleAsInvalid();
        return handle;
    }

    protected override bool ReleaseHandle()
    {
        int rc = UsbDevFs.Close(handle);
        Debug.Assert(rc == 0, $"close(usbfs fd) failed: {rc}");
        return rc == 0;
    }
}
