namespace XenPvUsb.Usb;

/// <summary>Receives the completion of a <see cref="UsbTransfer"/>.</summary>
public interface IUsbTransferOwner
{
    /// <summary>
    /// Called exactly once per submitted transfer, possibly on another thread, and possibly before
    /// <see cref="IUsbHostDevice.Submit"/> has returned (a device that answers at once completes inline).
    /// </summary>
    void OnTransferCompleted(UsbTransfer transfer);
}

/// <summary>
/// One transfer to a host device, shaped like usbfs's struct usbdevfs_urb so the real host layer can
/// submit it without reshaping. Owned and pooled by the backend; the buffer is pinned for the
/// transfer's lifetime.
/// </summary>
public sealed class UsbTransfer
{
    /// <summary>Size of the SETUP packet that leads a control transfer's buffer (as in usbfs).</summary>
    public const int SetupSize = 8;

    /// <summary>usbfs ISO limit: at most 128 packets per URB.</summary>
    public const int MaxIsoPackets = 128;

    private int _externalCapacity;
    private object? _externalOwner;

    public UsbTransfer(int capacity)
    {
        Buffer = GC.AllocateArray<byte>(capacity, pinned: true);
    }

    public UsbTransferType Type { get; set; }

    /// <summary>Endpoint address, including the 0x80 direction bit for IN.</summary>
    public byte Endpoint { get; set; }

    /// <summary>USBDEVFS_URB_SHORT_NOT_OK: a short IN transfer completes with -EREMOTEIO.</summary>
    public bool ShortNotOk { get; set; }

    /// <summary>
    /// Data buffer. For control transfers it starts with the 8-byte SETUP packet (little-endian, as on
    /// the wire) followed by the data stage, exactly as usbfs wants it.
    /// </summary>
    public byte[] Buffer { get; }

    /// <summary>
    /// Memory outside <see cref="Buffer"/> that holds this transfer's bytes instead (the backend's
    /// grant-mapped guest pages), or 0. It stays valid until the transfer has completed.
    /// </summary>
    public nint ExternalBuffer { get; private set; }

    /// <summary>Size of the memory in use: <see cref="Buffer"/>'s length, or the external buffer's.</summary>
    public int Capacity => ExternalBuffer != 0 ? _externalCapacity : Buffer.Length;

    /// <summary>The transfer's memory: <see cref="Buffer"/>, or the external buffer while one is set.</summary>
    public unsafe Span<byte> Bytes => ExternalBuffer != 0 ? new Span<byte>((void*)ExternalBuffer, _externalCapacity) : Buffer;

    /// <summary>Bytes of <see cref="Bytes"/> in use (for control: 8 + wLength).</summary>
    public int Length { get; set; }

    /// <summary>Linux URB status at completion: 0, or a negative errno (-EPIPE stall, -ENOENT killed, ...).</summary>
    public int Status { get; set; }

    /// <summary>Bytes transferred (for control: the data stage only).</summary>
    public int ActualLength { get; set; }

    /// <summary>
    /// Isochronous: the (micro)frame asked for the first packet (usbdevfs_urb.start_frame). In only: usbfs
    /// submits with USBDEVFS_URB_ISO_ASAP, so the host controller schedules the transfer when it can and
    /// ignores the value, and a usbfs reap does not report the frame it chose (processcompl copies status,
    /// actual_length, error_count and the per-packet results, nothing else). A completion leaves it as submitted.
    /// </summary>
    public int StartFrame { get; set; }

    /// <summary>Isochronous, at completion: how many packets completed with an error (non-zero <see cref="UsbIsoPacket.Status"/>).</summary>
    public int ErrorCount { get; set; }

    /// <summary>
    /// Isochronous: how many packets the transfer has, 1 to <see cref="MaxIsoPackets"/> (usbfs refuses others
    /// with -EINVAL). The first <see cref="NumberOfPackets"/> entries of <see cref="IsoPackets"/> describe them.
    /// </summary>
    public int NumberOfPackets { get; set; }

    /// <summary>
    /// Per-packet descriptors for isochronous transfers (the first <see cref="NumberOfPackets"/> are used),
    /// allocated once with the transfer. The owner sets each <see cref="UsbIsoPacket.Length"/> before
    /// submitting; the device fills in <see cref="UsbIsoPacket.ActualLength"/> and <see cref="UsbIsoPacket.Status"/>.
    /// </summary>
    /// <remarks>
    /// Layout (usbfs's rule): the packets lie back to back in <see cref="Bytes"/>, packet i at the sum of the
    /// lengths before it (<see cref="GetIsoPacketOffset"/>), whatever their actual lengths turn out to be: an
    /// IN packet that comes back short leaves a gap (zeros from usbfs) before the next one. usbfs takes
    /// <see cref="IsoPacketsLength"/> as the transfer's length and ignores <see cref="Length"/>, so the
    /// owner must keep it within <see cref="Capacity"/>: the kernel would otherwise read or write the
    /// daemon's memory beyond the buffer. At completion <see cref="ActualLength"/> is the sum of the
    /// packets' actual lengths and <see cref="Status"/> is the transfer's (0, or -ENOENT, -ESHUTDOWN,
    /// -ENODEV... for a transfer cut off); errors of single packets are in their <see cref="UsbIsoPacket.Status"/>.
    /// </remarks>
    public UsbIsoPacket[] IsoPackets { get; } = new UsbIsoPacket[MaxIsoPackets];

    /// <summary>
    /// Sum of the lengths of the first <see cref="NumberOfPackets"/> packets (the length usbfs gives the
    /// transfer), or -1 if <see cref="NumberOfPackets"/> is out of range or a length is negative.
    /// </summary>
    public int IsoPacketsLength
    {
        get
        {
            if (NumberOfPackets < 1 || NumberOfPackets > MaxIsoPackets)
            {
                return -1;
            }
            long total = 0;
            for (int i = 0; i < NumberOfPackets; i++)
            {
                if (IsoPackets[i].Length < 0)
                {
                    return -1;
                }
                total += IsoPackets[i].Length;
            }
            return total > int.MaxValue ? -1 : (int)total;
        }
    }

    public IUsbTransferOwner? Owner { get; set; }

    /// <summary>Free for the owner: the backend keeps its request slot here.</summary>
    public int Tag { get; set; }

    public bool IsIn => (Endpoint & 0x80) != 0;

    /// <summary>Data stage of the transfer (after the SETUP packet for control transfers).</summary>
    public Span<byte> Data => Type == UsbTransferType.Control
        ? Bytes.Slice(SetupSize, Length - SetupSize)
        : Bytes[..Length];

    /// <summary>Where packet <paramref name="index"/> starts in <see cref="Bytes"/>: the sum of the lengths of the packets before it.</summary>
    public int GetIsoPacketOffset(int index)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, NumberOfPackets);
        int offset = 0;
        for (int i = 0; i < index; i++)
        {
            offset += IsoPackets[i].Length;
        }
        return offset;
    }

    /// <summary>
    /// Packet <paramref name="index"/>'s part of <see cref="Bytes"/> (its requested length). For walking all
    /// packets, keep a running offset instead: this sums the lengths before it on every call.
    /// </summary>
    public Span<byte> GetIsoPacketBytes(int index) => Bytes.Slice(GetIsoPacketOffset(index), IsoPackets[index].Length);

    /// <summary>
    /// Makes the transfer use <paramref name="capacity"/> bytes at <paramref name="address"/> instead of <see cref="Buffer"/>.
    /// <paramref name="owner"/> is what holds that memory, if it is managed (a pinned array): the transfer keeps
    /// it alive for as long as the address is set, so a device still holding the transfer never writes into freed memory.
    /// </summary>
    public void UseExternalBuffer(nint address, int capacity, object? owner = null)
    {
        ArgumentOutOfRangeException.ThrowIfZero(address);
        ArgumentOutOfRangeException.ThrowIfNegative(capacity);
        ExternalBuffer = address;
        _externalCapacity = capacity;
        _externalOwner = owner;
    }

    /// <summary>Back to <see cref="Buffer"/>.</summary>
    public void ClearExternalBuffer()
    {
        ExternalBuffer = 0;
        _externalCapacity = 0;
        _externalOwner = null;
    }

    /// <summary>Completes the transfer: sets the result and tells the owner.</summary>
    public void Complete(int status, int actualLength)
    {
        Status = status;
        ActualLength = actualLength;
        Owner?.OnTransferCompleted(this);
    }
}

/// <summary>usbdevfs_iso_packet_desc in managed form: one packet of an isochronous <see cref="UsbTransfer"/>.</summary>
public struct UsbIsoPacket
{
    /// <summary>
    /// In: bytes the packet may carry. usbfs refuses more than 98304 (-EINVAL) and usbcore more than the
    /// endpoint's wMaxPacketSize times its high-bandwidth multiplier (-EMSGSIZE), both at submit.
    /// </summary>
    public int Length;

    /// <summary>Out: bytes moved in this packet (IN: written at the packet's offset; OUT: normally <see cref="Length"/>).</summary>
    public int ActualLength;

    /// <summary>
    /// Out: the packet's own status: 0, or a negative errno as the host controller reports it (-EXDEV the packet
    /// was not transferred, e.g. its frame was missed or the transfer was cut off; -EPROTO no answer or bit
    /// stuffing; -EOVERFLOW babble; -EILSEQ CRC; -ENOSR/-ECOMM buffer under/overrun).
    /// </summary>
    public int Status;
}
