using System.Runtime.InteropServices;

namespace XenPvUsb.Usbif;

/// <summary>struct usbif_conn_request (usbif.h): a dummy slot the backend consumes per plug event.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct usbif_conn_request
{
    public ushort id;
}
