using XenPvUsb.Usb;
using XenPvUsb.Usbif;
using XenPvUsb.Xen;

namespace XenPvUsb.Backend;

/// <summary>
/// One request in flight (QEMU's usbback_req): the validated copy of the guest's request and the
/// transfer submitted for it. Slots are pooled per controller, one per ring entry, so the hot path
/// does not allocate.
/// </summary>
internal sealed class UrbSlot
{
    /// <summary>Transfers up to one page of data use the small buffer; larger ones the 64 KiB one, made on first need.</summary>
    public const int SmallCapacity = UsbTransfer.SetupSize + 4096;
    public const int LargeCapacity = UsbTransfer.SetupSize + 65536;

    private readonly IUsbTransferOwner _owner;
    private UsbTransfer? _small;
    private UsbTransfer? _large;

    public UrbSlot(int index, IUsbTransferOwner owner)
    {
        Index = index;
        _owner = owner;
    }

    public int Index { get; }

    /// <summary>The guest's copy of the request, taken once out of shared memory.</summary>
    public usbif_urb_request Request;

    public UsbifPipe Pipe { get; set; }

    public int Port { get; set; }

    public UsbTransfer? Transfer { get; private set; }

    /// <summary>Set when the guest unlinked it or its device went away: it is answered with an error whatever the device says.</summary>
    public bool Cancelled { get; set; }

    /// <summary>The guest's pages, when the transfer works on them in place (<see cref="GrantMode.Map"/>); unmapped at release.</summary>
    public GrantMapping? Mapping { get; set; }

    /// <summary>Stopwatch timestamp of the submission to the device.</summary>
    public long SubmittedAt { get; set; }

    public UsbTransfer Rent(int capacity)
    {
        UsbTransfer t;
        if (capacity <= SmallCapacity)
        {
            t = _small ??= new UsbTransfer(SmallCapacity);
        }
        else
        {
            t = _large ??= new UsbTransfer(LargeCapacity);
        }
        t.Owner = _owner;
        t.Tag = Index;
        t.Status = 0;
        t.ActualLength = 0;
        t.ErrorCount = 0;
        t.StartFrame = 0;
        t.NumberOfPackets = 0;
        Transfer = t;
        Cancelled = false;
        return t;
    }

    /// <summary>Frees the slot for the next request. Only once the device is done with the transfer: this unmaps the guest's pages.</summary>
    public void Release()
    {
        if (Mapping is not null)
        {
            Transfer?.ClearExternalBuffer();
            Mapping.Dispose();
            Mapping = null;
        }
        Transfer = null;
        Cancelled = false;
    }
}
