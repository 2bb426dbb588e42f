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

    /// <summary>Isochronous state, made on the slot's first isochronous request (<see cref="IsoRequest.Chunks"/> is 0 unless one is in flight).</summary>
    public IsoRequest? Iso { get; private set; }

    public bool HasIsoInFlight => Iso is { Chunks: > 0 };

    public IsoRequest BeginIso(int packets)
    {
        Iso ??= new IsoRequest();
        Iso.Begin(packets);
        return Iso;
    }

    /// <summary>Set when the guest unlinked it or its device went away: it is answered with an error whatever the device says.</summary>
    public bool Cancelled { get; set; }

    /// <summary>The guest's pages, when the transfer works on them in place (<see cref="GrantMode.Map"/>); unmapped at release.</summary>
    public GrantMapping? Mapping { get; set; }

    /// <summary>What the transfer this slot submitted costs in usbfs memory (0 when it has none at a device).</summary>
    public long DeviceCost { get; set; }

    /// <summary>Stopwatch timestamp of the submission to the device.</summary>
    public long SubmittedAt { get; set; }

    /// <summary>
    /// For a request that rides in a merged transfer (see VusbController's bulk IN merging): the slot
    /// that owns the transfer. Null for a slot that owns its own transfer or is free.
    /// </summary>
    public UrbSlot? Lead { get; private set; }

    /// <summary>For the lead of a merged transfer: every member in ring order, the lead first (empty or null otherwise).</summary>
    public List<UrbSlot>? Group { get; private set; }

    public bool IsGroupLead => Group is { Count: > 0 };

    /// <summary>Where this request's data lies in the merged transfer, and how long it is.</summary>
    public int GroupOffset { get; private set; }

    public int GroupLength { get; private set; }

    /// <summary>True while the request waits for its answer (owning a transfer, riding in one, or waiting for a device operation).</summary>
    public bool InFlight => Transfer is not null || Lead is not null || OperationPending;

    /// <summary>The request is a device operation (SET_CONFIGURATION, ...) running off the loop thread.</summary>
    public bool OperationPending { get; private set; }

    /// <summary>The controller's connection the request came in on: an answer is only given on that connection.</summary>
    public int Epoch { get; set; }

    /// <summary>Counts the slot's uses, so that a late result of a device operation finds out whether it still belongs here.</summary>
    public int Generation { get; private set; }

    /// <summary>Makes the slot wait for a device operation instead of a transfer.</summary>
    public void BeginOperation()
    {
        OperationPending = true;
        Cancelled = false;
    }

    /// <summary>Makes this slot the lead of a merged transfer (owned by the controller's pool, not the slot).</summary>
    public void LeadGroup(UsbTransfer merged, int length)
    {
        Take(merged);
        Group ??= new List<UrbSlot>(Usbif.Usbif.USB_URB_RING_SIZE);
        Group.Clear();
        Group.Add(this);
        GroupOffset = 0;
        GroupLength = length;
    }

    /// <summary>Adds a request to the merged transfer this slot leads, after the ones already in it.</summary>
    public void AddToGroup(UrbSlot member, int offset, int length)
    {
        member.Lead = this;
        member.Cancelled = false;
        member.GroupOffset = offset;
        member.GroupLength = length;
        Group!.Add(member);
    }

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
        Take(t);
        return t;
    }

    /// <summary>Makes <paramref name="t"/> this slot's transfer, its results cleared and its completion routed back here.</summary>
    private void Take(UsbTransfer t)
    {
        t.Owner = _owner;
        t.Tag = Index;
        t.Status = 0;
        t.ActualLength = 0;
        t.ErrorCount = 0;
        t.StartFrame = 0;
        t.NumberOfPackets = 0;
        Transfer = t;
        Cancelled = false;
    }

    /// <summary>The transfers this slot keeps for its next requests (to drop them when the controller idles).</summary>
    public UsbTransfer? SmallTransfer => _small;

    public UsbTransfer? LargeTransfer => _large;

    /// <summary>
    /// Forgets the transfers this slot owns, so that a device still holding one can complete it into
    /// nothing: the slot's next request gets fresh buffers.
    /// </summary>
    public void AbandonTransfers()
    {
        _small = null;
        _large = null;
        Iso?.Abandon();
        Mapping = null; // the device may still use the mapped pages; the mapping goes with the process
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
        Iso?.End();
        Lead = null;
        OperationPending = false;
        Generation++;
        Group?.Clear();
        GroupOffset = 0;
        GroupLength = 0;
        Cancelled = false;
    }
}
