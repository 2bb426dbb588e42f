using System.Runtime.InteropServices;

namespace XenPvUsb.Usbif;

/// <summary>struct usbif_urb_response (usbif.h), 16 bytes.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct usbif_urb_response
{
    public ushort id;
    public ushort start_frame;
    public int status;
    public int actual_length;
    public int error_count;
}
