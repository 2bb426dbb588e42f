using System.Diagnostics;

namespace XenPvUsb.Backend;

/// <summary>
/// What one controller's data path did: URBs answered after reaching a device, their bytes, and where
/// the time went (Stopwatch ticks from submit to completion, and spent in grant copy or map/unmap).
/// </summary>
public struct UrbStatistics
{
    /// <summary>URBs submitted to a device and completed (requests answered locally or refused are not counted).</summary>
    public long Completed;

    /// <summary>Data bytes those URBs moved (actual lengths).</summary>
    public long Bytes;

    /// <summary>How many of them had their pages grant-mapped rather than copied.</summary>
    public long Mapped;

    /// <summary>Requests taken off the ring (all kinds), and how many times the ring had new ones when looked at.</summary>
    public long Requests;

    public long Batches;

    /// <summary>Bulk IN requests served in merged transfers, and how many such transfers there were.</summary>
    public long Merged;

    public long MergedTransfers;

    /// <summary>Times a request waited for the usbfs memory budget, and the most memory this controller had at devices at once.</summary>
    public long Deferred;

    public long PeakDeviceBytes;

    /// <summary>Times the controller idled long enough to give its buffers back.</summary>
    public long BufferReleases;

    /// <summary>Devices reset because the guest reset its port and addressed the device again.</summary>
    public long DeviceResets;

    /// <summary>Isochronous packets answered, and how many of them with an error status.</summary>
    public long IsoPackets;

    public long IsoPacketErrors;

    /// <summary>Event-channel notifications received from the guest (the loop found its fd ready).</summary>
    public long Kicks;

    /// <summary>Event-channel notifications sent to the guest, and the response pushes that published at least one response.</summary>
    public long Notifies;

    public long Pushes;

    /// <summary>Grant copy and map calls (one ioctl each, of up to 16 segments per hypercall in gntdev) and the segments in them.</summary>
    public long GrantCalls;

    public long GrantSegments;

    /// <summary>Transfers handed to devices (a merged transfer counts once; an isochronous request once per chunk).</summary>
    public long Submits;

    public long DeviceTicks;

    public long GrantTicks;

    public readonly double MeanDeviceMicroseconds => Mean(DeviceTicks);

    public readonly double MeanGrantMicroseconds => Mean(GrantTicks);

    public readonly double MeanBatch => Batches == 0 ? 0 : (double)Requests / Batches;

    /// <summary>Total ticks in microseconds.</summary>
    public static double Microseconds(long ticks) => ticks * 1e6 / Stopwatch.Frequency;

    private readonly double Mean(long ticks) => Completed == 0 ? 0 : ticks * 1e6 / Stopwatch.Frequency / Completed;
}
