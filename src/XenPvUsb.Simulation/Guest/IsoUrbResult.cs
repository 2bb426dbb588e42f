namespace XenPvUsb.Simulation.Guest;

/// <summary>
/// What the backend answered for one isochronous URB: the response's status, actual_length (clamped
/// to the buffer as xen-hcd does), start_frame and error_count, and each packet's descriptor as the
/// frontend found it in its granted pages afterwards.
/// </summary>
public sealed record IsoUrbResult(int Status, int ActualLength, int StartFrame, int ErrorCount, IReadOnlyList<IsoPacketResult> Packets)
{
    public bool Ok => Status == 0;
}

/// <summary>
/// One struct usb_iso_packet_descriptor (u32 offset, u32 length, u32 actual_length, s32 status) read back
/// raw, as xen-hcd leaves it to the guest's driver: a backend may only have written actual_length and status.
/// Before the backend answers, usbcore's values: actual_length 0, status -EXDEV.
/// </summary>
public readonly record struct IsoPacketResult(uint Offset, uint Length, uint ActualLength, int Status);
