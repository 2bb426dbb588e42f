using System.Runtime.InteropServices;
using XenPvUsb.Interop.Linux;

namespace XenPvUsb.Usb.Usbfs;

/// <summary>The real <see cref="IUsbfsFile"/>: ioctls on an open /dev/bus/usb/BBB/DDD.</summary>
internal sealed unsafe class UsbfsFile : IUsbfsFile
{
    private readonly SafeUsbDevFsHandle _fd;

    private UsbfsFile(SafeUsbDevFsHandle fd)
    {
        _fd = fd;
    }

    public SafeHandle Handle => _fd;

    /// <summary>Opens a usbfs node; throws <see cref="UsbDeviceException"/> with errno and path.</summary>
    public static UsbfsFile Open(string path) => new(SafeUsbDevFsHandle.Open(path));

    /// <summary>Takes over a usbfs fd handed down by systemd (LISTEN_FDS).</summary>
    public static UsbfsFile Adopt(SafeHandle inherited) => new(SafeUsbDevFsHandle.Adopt(inherited));

    public int SubmitUrb(usbdevfs_urb* urb) => UsbDevFs.SubmitUrb(_fd, urb);

    public int DiscardUrb(usbdevfs_urb* urb) => UsbDevFs.DiscardUrb(_fd, urb);

    public int ReapUrbNoDelay(out usbdevfs_urb* urb) => UsbDevFs.ReapUrbNoDelay(_fd, out urb);

    public int ClaimInterface(int interfaceNumber) => UsbDevFs.ClaimInterface(_fd, (uint)interfaceNumber);

    public int ReleaseInterface(int interfaceNumber) => UsbDevFs.ReleaseInterface(_fd, (uint)interfaceNumber);

    public int DisconnectClaim(int interfaceNumber, uint flags, string driver) => UsbDevFs.DisconnectClaim(_fd, (uint)interfaceNumber, flags, driver);

    public int DisconnectDriver(int interfaceNumber) => UsbDevFs.InterfaceIoctl(_fd, interfaceNumber, UsbDevFs.USBDEVFS_DISCONNECT);

    public int ConnectDriver(int interfaceNumber) => UsbDevFs.InterfaceIoctl(_fd, interfaceNumber, UsbDevFs.USBDEVFS_CONNECT);

    public int SetConfiguration(int configurationValue) => UsbDevFs.SetConfiguration(_fd, configurationValue);

    public int SetInterface(int interfaceNumber, int alternateSetting) => UsbDevFs.SetInterface(_fd, (uint)interfaceNumber, (uint)alternateSetting);

    public int ClearHalt(int endpoint) => UsbDevFs.ClearHalt(_fd, (uint)endpoint);

    public int Reset() => UsbDevFs.Reset(_fd);

    public int ClaimPort(int port) => UsbDevFs.ClaimPort(_fd, (uint)port);

    public int ReleasePort(int port) => UsbDevFs.ReleasePort(_fd, (uint)port);

    public int GetConnInfo(out int busNum, out int devNum) => UsbDevFs.GetConnInfo(_fd, out busNum, out devNum);

    public int GetSpeed() => UsbDevFs.GetSpeed(_fd);

    public int GetCapabilities(out uint capabilities) => UsbDevFs.GetCapabilities(_fd, out capabilities);

    public void Dispose() => _fd.Dispose();
}
