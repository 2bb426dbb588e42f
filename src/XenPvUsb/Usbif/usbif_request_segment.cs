using System.Runtime.InteropServices;

namespace XenPvUsb.Usbif;

/// <summary>struct usbif_request_segment (usbif.h): one granted page of a request's buffer.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct usbif_request_segment
{
    public uint gref;
    public ushort offset;
    public ushort length;
}

/// <summary>seg[USBIF_MAX_SEGMENTS_PER_REQUEST].</summary>
[System.Runtime.CompilerServices.InlineArray(Usbif.USBIF_MAX_SEGMENTS_PER_REQUEST)]
public struct usbif_request_segment_array
{
    private usbif_request_segment _element0;
}
