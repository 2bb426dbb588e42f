using System.Runtime.InteropServices;

namespace XenPvUsb.Usbif;

/// <summary>struct usbif_conn_response (usbif.h), 4 bytes: a plug (speed 1..3) or unplug (speed 0) event.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct usbif_conn_response
{
    public ushort id;
    public byte portnum;
    public byte speed;
}
