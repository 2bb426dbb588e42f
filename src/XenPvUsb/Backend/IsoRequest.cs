using XenPvUsb.Usb;
using XenPvUsb.Usbif;

namespace XenPvUsb.Backend;

/// <summary>
/// What a slot keeps for an isochronous request: the guest's packet descriptors as copied out of its
/// pages (rewritten with the results before they go back), the packets' offsets and lengths in the
/// guest's buffer, and the usbfs URBs the request is split into (at most 128 packets each). Made on a
/// slot's first isochronous request and reused.
/// </summary>
internal sealed class IsoRequest
{
    private UsbTransfer?[] _extra = [];

    /// <summary>The descriptors, 16 bytes each (struct usb_iso_packet_descriptor), as the guest laid them out.</summary>
    public byte[] Descriptors { get; private set; } = [];

    public int[] Offsets { get; private set; } = [];

    public int[] Lengths { get; private set; } = [];

    /// <summary>At completion: the bytes each packet moved, clamped to its length.</summary>
    public int[] Actual { get; private set; } = [];

    /// <summary>Packets of the request in flight (0 when the slot holds no isochronous request).</summary>
    public int Packets { get; private set; }

    /// <summary>URBs the request went to the device as: the slot's own transfer first, then <see cref="Chunk"/>(1), ...</summary>
    public int Chunks { get; private set; }

    /// <summary>URBs not completed yet.</summary>
    public int Pending { get; set; }

    /// <summary>Makes room for <paramref name="packets"/> packets and starts a request of that many.</summary>
    public void Begin(int packets)
    {
        if (Offsets.Length < packets)
        {
            int size = Math.Max(packets, Math.Min(2 * Offsets.Length, UrbRequestValidator.MaxIsoPacketsPerRequest));
            Descriptors = new byte[size * UrbRequestValidator.IsoDescriptorSize];
            Offsets = new int[size];
            Lengths = new int[size];
            Actual = new int[size];
        }
        Packets = packets;
        Chunks = (packets + UsbTransfer.MaxIsoPackets - 1) / UsbTransfer.MaxIsoPackets;
        Pending = 0;
    }

    /// <summary>The transfer of URB <paramref name="index"/> ≥ 1 (the first is the slot's own), made on first need.</summary>
    public UsbTransfer Chunk(int index)
    {
        if (_extra.Length < index)
        {
            Array.Resize(ref _extra, UrbRequestValidator.MaxIsoPacketsPerRequest / UsbTransfer.MaxIsoPackets - 1);
        }
        // The extra URBs keep their data in the first URB's buffer (an external buffer each): no buffer of their own.
        return _extra[index - 1] ??= new UsbTransfer(0);
    }

    /// <summary>True if <paramref name="t"/> is one of this request's URBs after the first.</summary>
    public bool IsExtraChunk(UsbTransfer t)
    {
        for (int i = 1; i < Chunks; i++)
        {
            if (ReferenceEquals(_extra[i - 1], t))
            {
                return true;
            }
        }
        return false;
    }

    /// <summary>The URBs after the first that the request in flight uses (to cancel or forget them).</summary>
    public ReadOnlySpan<UsbTransfer?> ExtraChunks => Chunks > 1 ? _extra.AsSpan(0, Chunks - 1) : [];

    /// <summary>Every extra URB made so far, in use or not (to forget them at the devices); null where none was made.</summary>
    public ReadOnlySpan<UsbTransfer?> AllExtraChunks => _extra;

    /// <summary>The request is answered (or abandoned).</summary>
    public void End()
    {
        Packets = 0;
        Chunks = 0;
        Pending = 0;
    }

    /// <summary>
    /// Forgets the extra URBs: a device still holding one completes it into nothing, and the next request makes
    /// fresh ones (each keeps the buffer it points into alive until then).
    /// </summary>
    public void Abandon()
    {
        _extra = [];
        End();
    }
}
