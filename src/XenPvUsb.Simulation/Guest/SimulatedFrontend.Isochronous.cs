using System.Buffers.Binary;
using XenPvUsb.Simulation.Xen;
using XenPvUsb.Usb;
using XenPvUsb.Usbif;
using static XenPvUsb.Usbif.Usbif;

namespace XenPvUsb.Simulation.Guest;

/// <summary>
/// Isochronous URBs the way xen-hcd maps them (xenhcd_map_urb_for_request): the transfer buffer's pages
/// first (read-only for OUT, writable for IN), then the pages of the URB's iso_frame_desc array, always
/// writable, in their own segments (u.isoc.nr_frame_desc_segs); u.isoc carries urb->interval,
/// urb->start_frame and number_of_packets. The descriptor array is not page-aligned: in Linux it is the
/// tail of the kmalloc'd struct urb, so its segments start wherever that puts it.
/// </summary>
public sealed partial class SimulatedFrontend
{
    /// <summary>sizeof(struct usb_iso_packet_descriptor): u32 offset, u32 length, u32 actual_length, s32 status.</summary>
    public const int IsoDescriptorSize = 16;

    /// <summary>Where the descriptor array starts in its first page unless told: behind a struct urb at the start of a kmalloc object.</summary>
    public const int DefaultIsoDescriptorOffset = 192;

    // usb_submit_urb sets every packet to this before the HCD sees it (urb.c).
    private const int Exdev = -18;

    /// <summary>
    /// Submits one isochronous URB and waits for its response. <paramref name="buffer"/> is the transfer buffer
    /// (OUT data is read from it; for IN, what the backend wrote anywhere in it is copied back, since in a real
    /// guest the granted pages are the buffer). Packet i has <paramref name="packetLengths"/>[i] bytes at
    /// <paramref name="packetOffsets"/>[i], by default back to back. <paramref name="interval"/> is urb->interval
    /// (frames at full speed, microframes at high speed, as usbcore normalises it) and <paramref name="startFrame"/>
    /// urb->start_frame (a driver resubmitting an ISO_ASAP URB leaves what the last completion put there).
    /// <paramref name="pageOffset"/> places the buffer in its first page, <paramref name="descriptorOffset"/> the
    /// descriptor array in its first page; an array may straddle pages, and so may one descriptor. With an empty
    /// buffer xen-hcd maps no descriptor pages at all (it counts them only when transfer_buffer_length is not 0).
    /// More than 16 pages in all is xen-hcd's -E2BIG, thrown here as an <see cref="ArgumentException"/>.
    /// Cancelling sends an unlink.
    /// </summary>
    public async Task<IsoUrbResult> SubmitIsochronousAsync(UsbifPipe pipe, Memory<byte> buffer, IReadOnlyList<int> packetLengths, ushort interval,
        ushort startFrame = 0, IReadOnlyList<int>? packetOffsets = null, bool shortNotOk = false, int pageOffset = 0,
        int descriptorOffset = DefaultIsoDescriptorOffset, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(packetLengths);
        if (pipe.Type != UsbTransferType.Isochronous)
        {
            throw new ArgumentException("not an isochronous pipe", nameof(pipe));
        }
        if (packetLengths.Count is < 1 or > ushort.MaxValue || (packetOffsets is not null && packetOffsets.Count != packetLengths.Count))
        {
            throw new ArgumentException("1 to 65535 packets, and as many offsets as lengths", nameof(packetLengths));
        }
        ArgumentOutOfRangeException.ThrowIfNegative(pageOffset);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(pageOffset, PageSize);
        ArgumentOutOfRangeException.ThrowIfNegative(descriptorOffset);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(descriptorOffset, PageSize);

        var iso = new IsoRequest(packetLengths.Count, descriptorOffset);
        uint next = 0;
        for (int i = 0; i < packetLengths.Count; i++)
        {
            uint offset = packetOffsets is null ? next : (uint)packetOffsets[i];
            iso.Packets[i] = new IsoPacketResult(offset, (uint)packetLengths[i], 0, Exdev);
            next = offset + (uint)packetLengths[i];
        }

        await _shadowSemaphore.WaitAsync(cancellationToken).ConfigureAwait(false);
        Shadow s;
        var tcs = new TaskCompletionSource<UrbResult>(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_ringLock)
        {
            ThrowIfDead();
            s = _shadows[_freeShadows.Pop()];
            s.Tcs = tcs;
            PutIsoUrb(s, pipe, buffer, iso, interval, startFrame, shortNotOk, pageOffset);
        }
        UrbResult r;
        using (cancellationToken.Register(() => TryUnlink(s, tcs)))
        {
            r = await tcs.Task.ConfigureAwait(false);
        }
        return new IsoUrbResult(r.Status, r.ActualLength, iso.StartFrame, iso.ErrorCount, iso.Packets);
    }

    private unsafe void PutIsoUrb(Shadow s, UsbifPipe pipe, Memory<byte> buffer, IsoRequest iso, ushort interval, ushort startFrame, bool shortNotOk,
        int pageOffset)
    {
        int length = buffer.Length;
        int nbuf = length == 0 ? 0 : (pageOffset + length + PageSize - 1) / PageSize;
        int descBytes = IsoDescriptorSize * iso.Packets.Length;
        int ndesc = length == 0 ? 0 : (iso.DescriptorOffset + descBytes + PageSize - 1) / PageSize;
        if (nbuf + ndesc > USBIF_MAX_SEGMENTS_PER_REQUEST)
        {
            _freeShadows.Push(s.Index);
            _shadowSemaphore.Release();
            throw new ArgumentException($"xen-hcd refuses URBs needing more than 16 pages (-E2BIG): {nbuf} data and {ndesc} descriptor pages", nameof(buffer));
        }
        var req = new usbif_urb_request
        {
            id = (ushort)s.Index,
            nr_buffer_segs = (ushort)nbuf,
            pipe = pipe.Value,
            transfer_flags = (ushort)(shortNotOk ? USBIF_SHORT_NOT_OK : 0),
            buffer_length = (ushort)length,
            u_isoc_interval = interval,
            u_isoc_start_frame = startFrame,
            u_isoc_number_of_packets = (ushort)iso.Packets.Length,
            u_isoc_nr_frame_desc_segs = (ushort)ndesc,
        };
        bool isIn = pipe.IsIn;
        ReadOnlySpan<byte> src = buffer.Span;
        int done = 0;
        for (int i = 0; i < nbuf; i++)
        {
            int off = i == 0 ? pageOffset : 0;
            int len = Math.Min(PageSize - off, length - done);
            // Both directions: for IN the pages stand for the guest's buffer, so bytes the backend leaves keep their value.
            src.Slice(done, len).CopyTo(new Span<byte>((byte*)PageAt(s, i) + off, len));
            s.Grants[i] = _grants.Grant(BackendDomain, s.Pages[i], readOnly: !isIn);
            req.seg[i] = new usbif_request_segment { gref = s.Grants[i].Value, offset = (ushort)off, length = (ushort)len };
            done += len;
        }

        if (ndesc > 0)
        {
            byte[] descriptors = new byte[descBytes];
            for (int i = 0; i < iso.Packets.Length; i++)
            {
                Span<byte> d = descriptors.AsSpan(i * IsoDescriptorSize, IsoDescriptorSize);
                BinaryPrimitives.WriteUInt32LittleEndian(d, iso.Packets[i].Offset);
                BinaryPrimitives.WriteUInt32LittleEndian(d[4..], iso.Packets[i].Length);
                BinaryPrimitives.WriteUInt32LittleEndian(d[8..], 0);
                BinaryPrimitives.WriteInt32LittleEndian(d[12..], Exdev);
            }
            done = 0;
            for (int i = 0; i < ndesc; i++)
            {
                int seg = nbuf + i;
                int off = i == 0 ? iso.DescriptorOffset : 0;
                int len = Math.Min(PageSize - off, descBytes - done);
                descriptors.AsSpan(done, len).CopyTo(new Span<byte>((byte*)PageAt(s, seg) + off, len));
                // xen-hcd grants the descriptor pages writable whatever the direction (flags 0).
                s.Grants[seg] = _grants.Grant(BackendDomain, s.Pages[seg], readOnly: false);
                req.seg[seg] = new usbif_request_segment { gref = s.Grants[seg].Value, offset = (ushort)off, length = (ushort)len };
                done += len;
            }
        }

        iso.BufferSegments = nbuf;
        iso.DescriptorSegments = ndesc;
        s.Iso = iso;
        s.GrantCount = nbuf + ndesc;
        s.UserBuffer = buffer;
        s.PageOffset = pageOffset;
        s.IsIn = isIn;
        s.InFlight = true;
        s.Pipe = pipe;
        _urbRing.PutRequest(req);
        if (_urbRing.PushRequestsAndCheckNotify())
        {
            _port!.Notify();
        }
    }

    /// <summary>After the grants are back: the buffer (IN) and the descriptors as the backend left them, start_frame and error_count.</summary>
    private unsafe void FinishIso(Shadow s, IsoRequest iso, in usbif_urb_response rsp)
    {
        iso.StartFrame = rsp.start_frame;
        iso.ErrorCount = rsp.error_count;
        if (s.IsIn)
        {
            Span<byte> dst = s.UserBuffer.Span;
            int copied = 0;
            for (int i = 0; i < iso.BufferSegments; i++)
            {
                int off = i == 0 ? s.PageOffset : 0;
                int len = Math.Min(PageSize - off, dst.Length - copied);
                new ReadOnlySpan<byte>((byte*)s.Pages[i] + off, len).CopyTo(dst.Slice(copied, len));
                copied += len;
            }
        }
        if (iso.DescriptorSegments == 0)
        {
            return;
        }
        byte[] descriptors = new byte[IsoDescriptorSize * iso.Packets.Length];
        int done = 0;
        for (int i = 0; i < iso.DescriptorSegments; i++)
        {
            int off = i == 0 ? iso.DescriptorOffset : 0;
            int len = Math.Min(PageSize - off, descriptors.Length - done);
            new ReadOnlySpan<byte>((byte*)s.Pages[iso.BufferSegments + i] + off, len).CopyTo(descriptors.AsSpan(done, len));
            done += len;
        }
        for (int i = 0; i < iso.Packets.Length; i++)
        {
            ReadOnlySpan<byte> d = descriptors.AsSpan(i * IsoDescriptorSize, IsoDescriptorSize);
            iso.Packets[i] = new IsoPacketResult(
                BinaryPrimitives.ReadUInt32LittleEndian(d),
                BinaryPrimitives.ReadUInt32LittleEndian(d[4..]),
                BinaryPrimitives.ReadUInt32LittleEndian(d[8..]),
                BinaryPrimitives.ReadInt32LittleEndian(d[12..]));
        }
    }

    private static nint PageAt(Shadow s, int index)
    {
        if (s.Pages[index] == 0)
        {
            s.Pages[index] = GuestGrantTable.AllocPage();
        }
        return s.Pages[index];
    }

    /// <summary>One isochronous URB's packets and where its descriptor array lies, filled in by the response.</summary>
    private sealed class IsoRequest(int packets, int descriptorOffset)
    {
        public IsoPacketResult[] Packets { get; } = new IsoPacketResult[packets];

        public int DescriptorOffset { get; } = descriptorOffset;

        public int BufferSegments { get; set; }

        public int DescriptorSegments { get; set; }

        public int StartFrame { get; set; }

        public int ErrorCount { get; set; }
    }
}
