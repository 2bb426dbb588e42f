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

    public int StartFrame { get; set; }

    public int ErrorCount { get; set; }

    public int NumberOfPackets { get; set; }

    /// <summary>Per-packet descriptors for isochronous transfers (first <see cref="NumberOfPackets"/> used).</summary>
    public UsbIsoPacket[] IsoPackets { get; } = new UsbIsoPacket[MaxIsoPackets];

    public IUsbTransferOwner? Owner { get; set; }

    /// <summary>Free for the owner: the backend keeps its request slot here.</summary>
    public int Tag { get; set; }

    public bool IsIn => (Endpoint & 0x80) != 0;

    /// <summary>Data stage of the transfer (after the SETUP packet for control transfers).</summary>
    public Span<byte> Data => Type == UsbTransferType.Control
        ? Bytes.Slice(SetupSize, Length - SetupSize)
        : Bytes[..Length];

    /// <summary>Makes the transfer use <paramref name="capacity"/> bytes at <paramref name="address"/> instead of <see cref="Buffer"/>.</summary>
    public void UseExternalBuffer(nint address, int capacity)
    {
        ArgumentOutOfRangeException.ThrowIfZero(address);
        ArgumentOutOfRangeException.ThrowIfNegative(capacity);
        ExternalBuffer = address;
        _externalCapacity = capacity;
    }

    /// <summary>Back to <see cref="Buffer"/>.</summary>
    public void ClearExternalBuffer()
    {
        ExternalBuffer = 0;
        _externalCapacity = 0;
    }

    /// <summary>Completes the transfer: sets the result and tells the owner.</summary>
    public void Complete(int status, int actualLength)
    {
        Status = status;
        ActualLength = actualLength;
        Owner?.OnTransferCompleted(this);
    }
}

/// <summary>usbdevfs_iso_packet_desc in managed form.</summary>
public struct UsbIsoPacket
{
    public int Length;
    public int ActualLength;
    public int Status;
}
