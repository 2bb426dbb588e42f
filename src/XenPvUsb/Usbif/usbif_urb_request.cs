using System.Runtime.InteropServices;

namespace XenPvUsb.Usbif;

/// <summary>
/// struct usbif_urb_request (usbif.h), 148 bytes. The 8-byte union u sits at offset 12:
/// ctrl[8] (SETUP packet), isoc {interval, start_frame, number_of_packets, nr_frame_desc_segs},
/// intr {interval, pad[3]}, unlink {unlink_id, pad[3]}.
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = 148)]
public struct usbif_urb_request
{
    [FieldOffset(0)] public ushort id;
    [FieldOffset(2)] public ushort nr_buffer_segs;
    [FieldOffset(4)] public uint pipe;
    [FieldOffset(8)] public ushort transfer_flags;
    [FieldOffset(10)] public ushort buffer_length;

    /// <summary>u.ctrl as one little-endian 64-bit word (the SETUP packet).</summary>
    [FieldOffset(12)] public ulong u_ctrl;

    [FieldOffset(12)] public ushort u_isoc_interval;
    [FieldOffset(14)] public ushort u_isoc_start_frame;
    [FieldOffset(16)] public ushort u_isoc_number_of_packets;
    [FieldOffset(18)] public ushort u_isoc_nr_frame_desc_segs;

    [FieldOffset(12)] public ushort u_intr_interval;

    [FieldOffset(12)] public ushort u_unlink_unlink_id;

    [FieldOffset(20)] public usbif_request_segment_array seg;
}
