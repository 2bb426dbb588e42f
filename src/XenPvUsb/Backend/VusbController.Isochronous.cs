using System.Buffers.Binary;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using XenPvUsb.Usb;
using XenPvUsb.Usbif;
using XenPvUsb.Xen;
using static XenPvUsb.Usbif.Usbif;

namespace XenPvUsb.Backend;

// Isochronous requests (usbif.h; pvusb-protocol.md §1.6): the data segments are the guest's transfer
// buffer, the frame-descriptor segments after them hold its struct usb_iso_packet_descriptor array
// (offset, length, actual_length, status; 16 bytes each, the array may straddle pages). The descriptors
// are copied once and validated; the packets go to the device back to back, as usbfs wants them, in
// URBs of at most 128 packets submitted ISO_ASAP; at completion each packet's data goes back to its own
// offset in the guest's buffer, and its actual length and status into the guest's descriptor.
internal sealed partial class VusbController
{
    private GrantCopySegment[] _isoCopies = new GrantCopySegment[64];

    /// <summary>Serves a validated isochronous request. Returns false if it waits for the usbfs memory budget.</summary>
    private bool SubmitIsochronous(ref usbif_urb_request req, UsbifPipe pipe, VusbPort p, int dataLength)
    {
        int packets = req.u_isoc_number_of_packets;
        int chunks = (packets + UsbTransfer.MaxIsoPackets - 1) / UsbTransfer.MaxIsoPackets;
        if (!FitsBudget(dataLength + ((chunks - 1) * UsbfsOverheadPerUrb)))
        {
            return false;
        }
        if (TakeSlot(ref req, pipe, p) is not { } slot)
        {
            return true;
        }
        long start = Stopwatch.GetTimestamp();
        IsoRequest iso = slot.BeginIso(packets);
        string? refusal = null;
        if (!CopyIsoDescriptors(ref slot.Request, iso, toGuest: false))
        {
            refusal = "grant copy of the isochronous packet descriptors failed";
        }
        int total = 0;
        refusal ??= UrbRequestValidator.ValidateIsoPackets(iso.Descriptors, packets, dataLength, iso.Offsets, iso.Lengths, out total);

        UsbTransfer first = slot.Rent(total);
        _buffersHeld = true;
        if (refusal is null && !pipe.IsIn && total > 0 && !CopyIsoData(ref slot.Request, iso, first, toGuest: false))
        {
            refusal = "grant copy of isochronous OUT data failed";
        }
        if (refusal is not null)
        {
            slot.Release();
            _freeSlots.Push(slot);
            Reject(req.id, USBIF_STATUS_INVAL, refusal, p.Number);
            return true;
        }

        // The URBs: packets [128 c, 128 c + 128) each; the first holds every packet's data back to back,
        // the others point into it at their first packet.
        int packet = 0;
        int offset = 0;
        for (int c = 0; c < chunks; c++)
        {
            UsbTransfer t = c == 0 ? first : iso.Chunk(c);
            int n = Math.Min(UsbTransfer.MaxIsoPackets, packets - packet);
            int length = 0;
            for (int k = 0; k < n; k++)
            {
                t.IsoPackets[k] = new UsbIsoPacket { Length = iso.Lengths[packet + k] };
                length += iso.Lengths[packet + k];
            }
            if (c > 0)
            {
                t.Owner = this;
                t.Tag = slot.Index;
                t.Status = 0;
                t.ActualLength = 0;
                t.ErrorCount = 0;
                t.UseExternalBuffer(BufferAddress(first, offset), length, first.Buffer);
            }
            t.Type = UsbTransferType.Isochronous;
            t.Endpoint = pipe.EndpointAddress;
            t.ShortNotOk = false;
            t.StartFrame = 0;
            t.NumberOfPackets = n;
            t.Length = length;
            packet += n;
            offset += length;
        }
        iso.Pending = chunks;
        slot.SubmittedAt = Stopwatch.GetTimestamp();
        _stats.GrantTicks += slot.SubmittedAt - start;
        ChargeDevice(slot, total + ((chunks - 1) * UsbfsOverheadPerUrb));
        IUsbHostDevice device = p.Device!;
        _stats.Submits += chunks;
        // A device may complete a URB inline; the request is answered when the last one is back.
        device.Submit(first);
        for (int c = 1; c < chunks; c++)
        {
            device.Submit(iso.Chunk(c));
        }
        return true;
    }

    private static unsafe nint BufferAddress(UsbTransfer t, int offset) =>
        (nint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(t.Buffer)) + offset;

    /// <summary>One URB of an isochronous request completed: once all have, the request is answered.</summary>
    private void CompleteIsochronousChunk(UrbSlot slot)
    {
        IsoRequest iso = slot.Iso!;
        if (--iso.Pending > 0)
        {
            return;
        }
        CreditDevice(slot);
        long now = Stopwatch.GetTimestamp();
        _stats.DeviceTicks += now - slot.SubmittedAt;
        _stats.Completed++;

        UsbTransfer first = slot.Transfer!;
        int linuxStatus = 0;
        int actual = 0;
        int errors = 0;
        int packet = 0;
        Span<byte> descriptors = iso.Descriptors;
        for (int c = 0; c < iso.Chunks; c++)
        {
            UsbTransfer t = c == 0 ? first : iso.Chunk(c);
            if (linuxStatus == 0)
            {
                linuxStatus = t.Status;
            }
            for (int k = 0; k < t.NumberOfPackets; k++, packet++)
            {
                // The device's counts are clamped to what the guest asked: the packet's own bytes only.
                int got = Math.Clamp(t.IsoPackets[k].ActualLength, 0, iso.Lengths[packet]);
                int status = t.IsoPackets[k].Status;
                iso.Actual[packet] = got;
                Span<byte> d = descriptors.Slice(packet * UrbRequestValidator.IsoDescriptorSize);
                BinaryPrimitives.WriteUInt32LittleEndian(d[8..], (uint)got);
                BinaryPrimitives.WriteInt32LittleEndian(d[12..], status);
                actual += got;
                if (status != 0)
                {
                    errors++;
                }
            }
        }
        int answer = UsbifStatus.FromLinuxStatus(linuxStatus);
        if (slot.Cancelled && answer == USBIF_STATUS_OK)
        {
            answer = USBIF_STATUS_SHUTDOWN;
        }
        _stats.IsoPackets += iso.Packets;
        _stats.IsoPacketErrors += errors;
        if (_evtchn is not null)
        {
            bool copied = (!slot.Pipe.IsIn || actual == 0 || CopyIsoData(ref slot.Request, iso, first, toGuest: true))
                && CopyIsoDescriptors(ref slot.Request, iso, toGuest: true);
            if (!copied)
            {
                answer = USBIF_STATUS_INVAL;
                actual = 0;
            }
        }
        _stats.Bytes += actual;
        Finish(slot, answer, actual, errors, slot.Request.u_isoc_start_frame);
        _stats.GrantTicks += Stopwatch.GetTimestamp() - now;
    }

    /// <summary>Grant-copies the packet descriptors between the guest's descriptor segments and <see cref="IsoRequest.Descriptors"/>.</summary>
    private unsafe bool CopyIsoDescriptors(ref usbif_urb_request req, IsoRequest iso, bool toGuest)
    {
        int first = req.nr_buffer_segs;
        fixed (byte* buf = iso.Descriptors)
        {
            return CopySegmentRange(ref req, first, first + req.u_isoc_nr_frame_desc_segs, buf,
                iso.Packets * UrbRequestValidator.IsoDescriptorSize, toGuest);
        }
    }

    /// <summary>
    /// Grant-copies each packet's bytes between its place in the guest's buffer (its offset, across the data
    /// segments) and its place in <paramref name="t"/>'s buffer (back to back, at the sum of the lengths
    /// before it): all of each packet for OUT, its actual length (<see cref="IsoRequest.Actual"/>) for
    /// IN, in one batch of grant copies.
    /// </summary>
    private unsafe bool CopyIsoData(ref usbif_urb_request req, IsoRequest iso, UsbTransfer t, bool toGuest)
    {
        int segs = req.nr_buffer_segs;
        Span<int> segStart = stackalloc int[USBIF_MAX_SEGMENTS_PER_REQUEST + 1];
        for (int i = 0; i < segs; i++)
        {
            segStart[i + 1] = segStart[i] + req.seg[i].length;
        }
        fixed (byte* buf = t.Buffer)
        {
            int n = 0;
            int local = 0;
            for (int packet = 0; packet < iso.Packets; packet++)
            {
                int guest = iso.Offsets[packet];
                int remaining = toGuest ? iso.Actual[packet] : iso.Lengths[packet];
                int k = 0;
                while (remaining > 0)
                {
                    while (segStart[k + 1] <= guest)
                    {
                        k++; // guest < buffer length (validated), so k stays below segs
                    }
                    usbif_request_segment seg = req.seg[k];
                    int into = guest - segStart[k];
                    int len = Math.Min(remaining, seg.length - into);
                    if (n == _isoCopies.Length)
                    {
                        Array.Resize(ref _isoCopies, 2 * n);
                    }
                    _isoCopies[n++] = new GrantCopySegment
                    {
                        Ref = new GrantRef(seg.gref),
                        Offset = (ushort)(seg.offset + into),
                        Length = (ushort)len,
                        ToGuest = toGuest,
                        Local = (nint)(buf + local + (guest - iso.Offsets[packet])),
                    };
                    guest += len;
                    remaining -= len;
                }
                local += iso.Lengths[packet];
            }
            if (n == 0)
            {
                return true;
            }
            _stats.GrantCalls++;
            _stats.GrantSegments += n;
            return _grants.Copy(Frontend, _isoCopies.AsSpan(0, n));
        }
    }
}
