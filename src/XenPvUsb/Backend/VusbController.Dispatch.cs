using System.Buffers.Binary;
using System.Diagnostics;
using XenPvUsb.Logging;
using XenPvUsb.Usb;
using XenPvUsb.Usbif;
using XenPvUsb.Xen;
using static XenPvUsb.Usbif.Usbif;

namespace XenPvUsb.Backend;

internal sealed partial class VusbController
{
    private const int PageSize = 4096;

    // Standard requests the backend handles itself (usb 2.0 spec 9.4; host-interfaces.md §1.10).
    private const byte ReqClearFeature = 1;
    private const byte ReqSetAddress = 5;
    private const byte ReqGetDescriptor = 6;
    private const byte ReqSetConfiguration = 9;
    private const byte ReqSetInterface = 11;

    private void ProcessUrbRequests()
    {
        while (true)
        {
            // Requests of the last batch still waiting for device memory go first, in ring order.
            if (_batchNext < _batchCount && !HandleBatch())
            {
                return;
            }
            if (!_urbRing.TryReadRequestProd(out uint prod))
            {
                LatchRingError("urb ring", prod);
                return;
            }
            // Copy the new requests out of the shared page once; from here on only the copies are looked
            // at. (prod is at most a ring's worth ahead of req_cons: TryReadRequestProd checked that.)
            int count = 0;
            while (_urbRing.ReqCons != prod)
            {
                if (count == _batch.Length || !_urbRing.TryCopyNextRequest(out _batch[count]))
                {
                    LatchRingError("urb ring", prod);
                    return;
                }
                count++;
            }
            if (count > 0)
            {
                _stats.Batches++;
                _stats.Requests += count;
                _batchNext = 0;
                _batchCount = count;
                // Consumed, not yet answered or in a slot: a successor must count them as in flight.
                SaveSnapshot();
                if (!HandleBatch())
                {
                    return;
                }
            }
            _passBudget -= count;
            if (_passBudget <= 0 && _urbRing.HasUnconsumedRequests())
            {
                // Enough for one pass: let every other fd be served, then come back.
                _loop.RequestPoll(this);
                return;
            }
            // Either keep polling the ring for a while (no notification needed for the guest's next
            // URB) or re-arm req_event and look once more, as RING_FINAL_CHECK_FOR_REQUESTS does.
            if (_loop.TryMarkHot(this) || !_urbRing.FinalCheckForRequests())
            {
                return;
            }
        }
    }

    /// <summary>
    /// Serves the batch from <c>_batchNext</c>. Returns false if it stopped before the end: the ring broke,
    /// the connection went, or the next request waits for this controller's usbfs memory budget (it is
    /// served, in order, when transfers in flight complete).
    /// </summary>
    private bool HandleBatch()
    {
        while (_batchNext < _batchCount)
        {
            int taken = HandleRequest(_batchNext, _batchCount);
            if (taken == 0)
            {
                _stats.Deferred++;
                return false;
            }
            _batchNext += taken;
            if (_ringError || _evtchn is null)
            {
                return false;
            }
        }
        return true;
    }

    /// <summary>Serves the request at <paramref name="index"/> of the batch; returns how many requests it took (more than one when merged).</summary>
    private int HandleRequest(int index, int count)
    {
        ref usbif_urb_request req = ref _batch[index];
        UrbRequestVerdict verdict = UrbRequestValidator.Validate(in req, NumPorts);
        UsbifPipe pipe = verdict.Pipe;
        int port = pipe.Port;
        if (!verdict.IsValid)
        {
            Reject(req.id, verdict.Status, verdict.Reason!, port);
            return 1;
        }
        if (verdict.IsUnlink)
        {
            HandleUnlink(req.id, port, req.u_unlink_unlink_id);
            return 1;
        }
        if (FindInFlight(req.id) is not null)
        {
            Reject(req.id, USBIF_STATUS_INVAL, "id already in flight", port);
            return 1;
        }
        if (_closing)
        {
            Respond(req.id, USBIF_STATUS_SHUTDOWN, 0);
            return 1;
        }
        int dataLength = verdict.DataLength;
        VusbPort p = _ports[port];
        if (p.Device is null)
        {
            Reject(req.id, USBIF_STATUS_NODEV, "no device on port", port);
            return 1;
        }
        if (pipe.Device != 0 && pipe.Device != p.Address)
        {
            Reject(req.id, USBIF_STATUS_NODEV, "unknown device address", port);
            return 1;
        }
        if (pipe.Type == UsbTransferType.Control)
        {
            if (TryHandleControlLocally(ref req, pipe, p))
            {
                return 1;
            }
        }
        else if (pipe.Type == UsbTransferType.Isochronous)
        {
            return SubmitIsochronous(ref req, pipe, p, dataLength) ? 1 : 0;
        }
        if (pipe.Type == UsbTransferType.Bulk && GrantMode == GrantMode.Copy && MergeBulkIn)
        {
            int members = MergeableRun(index, count, pipe, dataLength, out int total);
            if (members > 1)
            {
                if (!FitsBudget(total))
                {
                    return 0;
                }
                members = SubmitMerged(index, members, pipe, p, total);
                if (members > 1)
                {
                    return members;
                }
                // The first request's OUT data could not be copied: it is refused on its own below.
            }
        }
        int deviceBytes = pipe.Type == UsbTransferType.Control ? UsbTransfer.SetupSize + (int)(req.u_ctrl >> 48) : dataLength;
        if (!FitsBudget(deviceBytes))
        {
            return 0;
        }
        Submit(ref req, pipe, p, dataLength);
        return 1;
    }

    /// <summary>
    /// SET_ADDRESS is answered here (after a reset of the device when the guest re-addresses it); SET_CONFIGURATION, SET_INTERFACE and CLEAR_FEATURE(ENDPOINT_HALT) go to
    /// the device's own operations, which run off the loop thread: the request holds a slot until its
    /// result comes back. Returns false for a request that goes to the device as a control transfer.
    /// </summary>
    private bool TryHandleControlLocally(ref usbif_urb_request req, UsbifPipe pipe, VusbPort p)
    {
        ulong setup = req.u_ctrl;
        byte bmRequestType = (byte)setup;
        byte bRequest = (byte)(setup >> 8);
        ushort wValue = (ushort)(setup >> 16);
        ushort wIndex = (ushort)(setup >> 32);
        IUsbHostDevice device = p.Device!;
        if (p.HighSpeed is { } highSpeed)
        {
            // A SuperSpeed device the guest sees at high speed: its descriptors as a high-speed device's,
            // and what only SuperSpeed knows stalls, as on a high-speed device.
            if (HighSpeedView.IsSuperSpeedOnlyRequest(bmRequestType, bRequest, wValue))
            {
                Respond(req.id, USBIF_STATUS_STALL, 0);
                return true;
            }
            if (bmRequestType == 0x80 && bRequest == ReqGetDescriptor && highSpeed.Find(wValue) is { } descriptor)
            {
                AnswerLocally(ref req, pipe, p, descriptor);
                return true;
            }
        }
        switch ((bmRequestType, bRequest))
        {
            case (0x00, ReqSetAddress):
                if (wValue == 0 || wValue > 127)
                {
                    Respond(req.id, USBIF_STATUS_INVAL, 0);
                    return true;
                }
                if (p.Address != 0)
                {
                    // An addressed device addressed again: the guest reset its port (xen-hcd emulates port
                    // resets, the backend never sees them) and enumerates afresh. Reset the device itself too,
                    // so that it starts from scratch as the guest believes it does: a driver's error
                    // recovery (usb_reset_device, as usb-storage's after a transfer was cut off) relies on it.
                    p.Address = wValue;
                    _stats.DeviceResets++;
                    StartOperation(ref req, pipe, p, device.ResetAsync());
                    return true;
                }
                p.Address = wValue;
                Respond(req.id, USBIF_STATUS_OK, 0);
                return true;
            case (0x00, ReqSetConfiguration):
                StartOperation(ref req, pipe, p, device.SetConfigurationAsync(wValue & 0xff));
                return true;
            case (0x01, ReqSetInterface):
                StartOperation(ref req, pipe, p, device.SetInterfaceAsync(wIndex & 0xff, wValue & 0xff));
                return true;
            case (0x02, ReqClearFeature) when wValue == 0:
                StartOperation(ref req, pipe, p, device.ClearHaltAsync((byte)wIndex));
                return true;
            default:
                return false;
        }
    }

    /// <summary>A control IN answered with <paramref name="data"/> (cut to wLength), without the device.</summary>
    private void AnswerLocally(ref usbif_urb_request req, UsbifPipe pipe, VusbPort p, byte[] data)
    {
        if (TakeSlot(ref req, pipe, p) is not { } slot)
        {
            return;
        }
        int length = Math.Min(data.Length, (int)(req.u_ctrl >> 48));
        UsbTransfer t = slot.Rent(UsbTransfer.SetupSize + length);
        _buffersHeld = true;
        t.Type = UsbTransferType.Control;
        t.Length = UsbTransfer.SetupSize + length;
        data.AsSpan(0, length).CopyTo(t.Buffer.AsSpan(UsbTransfer.SetupSize));
        int status = USBIF_STATUS_OK;
        if (length > 0 && _evtchn is not null && !CopySegments(ref slot.Request, t, UsbTransfer.SetupSize, length, toGuest: true))
        {
            status = USBIF_STATUS_INVAL;
            length = 0;
        }
        Finish(slot, status, length);
    }

    /// <summary>A free slot holding a copy of <paramref name="req"/> for this connection, or null (refused) when none is free.</summary>
    private UrbSlot? TakeSlot(ref usbif_urb_request req, UsbifPipe pipe, VusbPort p)
    {
        if (!_freeSlots.TryPop(out UrbSlot? slot))
        {
            // Cannot happen while the ring arithmetic holds (one slot per ring entry); refuse rather than grow.
            Reject(req.id, USBIF_STATUS_SHUTDOWN, "no free request slot", p.Number);
            return null;
        }
        slot.Request = req;
        slot.Pipe = pipe;
        slot.Port = p.Number;
        slot.Epoch = _epoch;
        return slot;
    }

    private void StartOperation(ref usbif_urb_request req, UsbifPipe pipe, VusbPort p, Task<int> operation)
    {
        if (TakeSlot(ref req, pipe, p) is not { } slot)
        {
            return;
        }
        slot.BeginOperation();
        if (operation.IsCompleted)
        {
            FinishOperation(slot, slot.Generation, operation);
            return;
        }
        int generation = slot.Generation;
        operation.ContinueWith(t => _loop.Post(() => Contained(c =>
        {
            c.FinishOperation(slot, generation, t);
            if (c._dispatchDepth == 0)
            {
                c.PushResponses();
            }
        })), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    private void FinishOperation(UrbSlot slot, int generation, Task<int> operation)
    {
        if (slot.Generation != generation || !slot.OperationPending)
        {
            return; // the controller let go of the slot meanwhile
        }
        int status = operation.IsCompletedSuccessfully ? UsbifStatus.FromLinuxStatus(operation.Result) : USBIF_STATUS_IOERROR;
        if (slot.Cancelled && status == USBIF_STATUS_OK)
        {
            status = USBIF_STATUS_SHUTDOWN;
        }
        Finish(slot, status, 0);
    }

    private unsafe void Submit(ref usbif_urb_request req, UsbifPipe pipe, VusbPort p, int segmentBytes)
    {
        if (TakeSlot(ref req, pipe, p) is not { } slot)
        {
            return;
        }

        bool control = pipe.Type == UsbTransferType.Control;
        int dataLength = control ? (int)(req.u_ctrl >> 48) : segmentBytes;
        int setupLength = control ? UsbTransfer.SetupSize : 0;
        UsbTransfer t = slot.Rent(setupLength + dataLength);
        _buffersHeld = true;
        t.Type = pipe.Type;
        t.Length = setupLength + dataLength;
        bool isIn;
        if (control)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(t.Buffer, req.u_ctrl);
            isIn = (req.u_ctrl & 0x80) != 0;
            t.Endpoint = (byte)(pipe.Endpoint | (isIn ? 0x80 : 0));
            t.ShortNotOk = false;
        }
        else
        {
            isIn = pipe.IsIn;
            t.Endpoint = pipe.EndpointAddress;
            t.ShortNotOk = isIn && (req.transfer_flags & USBIF_SHORT_NOT_OK) != 0;
        }

        // The clock is read only around grant work (a system call in a PV dom0 without a stable TSC).
        bool map = !control && dataLength > 0 && GrantMode == GrantMode.Map && IsOneBuffer(ref slot.Request);
        bool copyOut = !map && !isIn && dataLength > 0;
        long start = map || copyOut ? Stopwatch.GetTimestamp() : _loop.Now;
        if (map && !TryMapSegments(slot, t, dataLength, writable: isIn))
        {
            slot.Release();
            _freeSlots.Push(slot);
            Reject(req.id, USBIF_STATUS_INVAL, "grant map of the data pages failed", p.Number);
            return;
        }
        if (copyOut && !CopySegments(ref slot.Request, t, setupLength, dataLength, toGuest: false))
        {
            slot.Release();
            _freeSlots.Push(slot);
            Reject(req.id, USBIF_STATUS_INVAL, "grant copy of OUT data failed", p.Number);
            return;
        }
        slot.SubmittedAt = map || copyOut ? Stopwatch.GetTimestamp() : start;
        _stats.GrantTicks += slot.SubmittedAt - start;
        ChargeDevice(slot, t.Length);
        _stats.Submits++;
        p.Device!.Submit(t);
    }

    /// <summary>
    /// How many requests, starting at <paramref name="index"/>, can share one transfer to the device.
    /// Linux drivers queue a scatter-gather transfer as many URBs at once (usb_sg_init, used by
    /// usb-storage), and xen-hcd, having no scatter-gather, puts one request on the ring per segment,
    /// mostly single pages; each would cost dom0 a URB, an interrupt and a reap. Consecutive bulk
    /// requests of one batch are merged into one transfer when that cannot change what the guest
    /// sees: same pipe and flags, every one but the last a multiple of 1024 bytes (whole packets at
    /// any bulk max-packet size), so the packets on the bus are the same; for IN, every one marked
    /// SHORT_NOT_OK too (a short packet ends the guest's whole sequence: the short one fails with an
    /// error and the driver unlinks the rest, which are answered unserved). An OUT transfer cannot end
    /// short but by an error, which ends the guest's sequence the same way.
    /// </summary>
    private int MergeableRun(int index, int count, UsbifPipe pipe, int firstLength, out int total)
    {
        ref usbif_urb_request first = ref _batch[index];
        total = firstLength;
        if ((pipe.IsIn && (first.transfer_flags & USBIF_SHORT_NOT_OK) == 0) || firstLength == 0 || _freeSlots.Count < 2
            || (_mergedTransfers.Count == 0 && _mergedTransfersMade == MaxMergedInFlight))
        {
            return 1;
        }
        int members = 1;
        int last = firstLength;
        _mergeLengths[0] = firstLength;
        for (int j = index + 1; j < count && members < _freeSlots.Count; j++)
        {
            ref usbif_urb_request next = ref _batch[j];
            if (next.pipe != first.pipe || next.transfer_flags != first.transfer_flags || last % MergeAlignment != 0)
            {
                break;
            }
            UrbRequestVerdict verdict = UrbRequestValidator.Validate(in next, NumPorts);
            int length = verdict.DataLength;
            if (!verdict.IsValid || length == 0 || total + length > MaxMergedBytes
                || _deviceBytes + total + length + UsbfsOverheadPerUrb > UsbfsBudget
                || FindInFlight(next.id) is not null || IdInBatch(next.id, index, j))
            {
                break;
            }
            _mergeLengths[members++] = length;
            total += length;
            last = length;
        }
        return members;
    }

    private bool IdInBatch(ushort id, int from, int to)
    {
        for (int k = from; k < to; k++)
        {
            if (_batch[k].id == id)
            {
                return true;
            }
        }
        return false;
    }

    /// <summary>
    /// Submits batch requests [index, index + members) as one bulk transfer of <paramref name="total"/>
    /// bytes; their data lengths are the ones <see cref="MergeableRun"/> left in _mergeLengths. OUT data is
    /// grant-copied in, all members in one call; the merge stops before the first member whose data could
    /// not be copied (that one is then refused on its own). Returns how many requests it took: 1 means
    /// none (the first one's copy failed) and the caller serves the first request alone.
    /// </summary>
    private unsafe int SubmitMerged(int index, int members, UsbifPipe pipe, VusbPort p, int total)
    {
        if (!_mergedTransfers.TryPop(out UsbTransfer? t))
        {
            t = new UsbTransfer(MaxMergedBytes);
            _buffersHeld = true;
            _mergedTransfersMade++;
        }
        if (!pipe.IsIn)
        {
            long start = Stopwatch.GetTimestamp();
            int copied;
            fixed (byte* buf = t.Buffer)
            {
                copied = CopyGroup(index, members, buf, lengths: _mergeLengths, toGuest: false);
            }
            _stats.GrantTicks += Stopwatch.GetTimestamp() - start;
            if (copied < 2)
            {
                _mergedTransfers.Push(t);
                return 1;
            }
            for (int k = copied; k < members; k++)
            {
                total -= _mergeLengths[k];
            }
            members = copied;
        }
        UrbSlot lead = _freeSlots.Pop();
        lead.Request = _batch[index];
        lead.Pipe = pipe;
        lead.Port = p.Number;
        lead.Epoch = _epoch;
        lead.LeadGroup(t, _mergeLengths[0]);
        int offset = _mergeLengths[0];
        for (int k = 1; k < members; k++)
        {
            UrbSlot m = _freeSlots.Pop();
            m.Request = _batch[index + k];
            m.Pipe = pipe;
            m.Port = p.Number;
            m.Epoch = _epoch;
            lead.AddToGroup(m, offset, _mergeLengths[k]);
            offset += _mergeLengths[k];
        }
        t.Type = UsbTransferType.Bulk;
        t.Endpoint = pipe.EndpointAddress;
        t.ShortNotOk = pipe.IsIn;
        t.Length = total;
        _stats.Merged += members;
        _stats.MergedTransfers++;
        lead.SubmittedAt = pipe.IsIn ? _loop.Now : Stopwatch.GetTimestamp();
        ChargeDevice(lead, total);
        _stats.Submits++;
        p.Device!.Submit(t);
        return members;
    }

    /// <summary>
    /// Grant-copies, in one call, the data of batch requests [index, index + members) (IN: those of
    /// <paramref name="slots"/>) between their segments and <paramref name="buffer"/>, where they lie side
    /// by side with <paramref name="lengths"/> bytes each (0: nothing to copy for that one). Returns how
    /// many members, from the first, had every segment copied.
    /// </summary>
    private unsafe int CopyGroup(int index, int members, byte* buffer, int[] lengths, bool toGuest, UrbSlot[]? slots = null)
    {
        int n = 0;
        int offset = 0;
        for (int k = 0; k < members; k++)
        {
            ref usbif_urb_request req = ref slots is null ? ref _batch[index + k] : ref slots[k].Request;
            int from = slots is null ? offset : slots[k].GroupOffset;
            n += FillCopySegments(ref req, 0, req.nr_buffer_segs, buffer + from, lengths[k], toGuest, _groupCopies.AsSpan(n));
            _groupCopyEnds[k] = n;
            offset += lengths[k];
        }
        if (n == 0)
        {
            return members;
        }
        _stats.GrantCalls++;
        _stats.GrantSegments += n;
        if (_grants.Copy(Frontend, _groupCopies.AsSpan(0, n)))
        {
            return members;
        }
        for (int k = 0; k < members; k++)
        {
            if (!MemberCopied(k))
            {
                return k;
            }
        }
        return members;
    }

    /// <summary>
    /// Answers every request of a merged transfer: those whose data all arrived succeed; the one where
    /// the transfer stopped gets its status and partial length; the ones after it were never served
    /// and are answered SHUTDOWN (the guest unlinks them after the error anyway).
    /// </summary>
    private unsafe void CompleteMerged(UrbSlot lead, long now)
    {
        UsbTransfer t = lead.Transfer!;
        int actual = Math.Clamp(t.ActualLength, 0, t.Length);
        int linuxStatus = t.Status;
        bool cancelled = lead.Cancelled;
        // Answered in ring order (the guest's completion of the request that stopped the transfer must
        // come before the others'); the lead's release clears its group, so take the members first.
        int n = lead.Group!.Count;
        lead.Group.CopyTo(_groupScratch);
        _stats.DeviceTicks += Math.Max(0, now - lead.SubmittedAt) * n;
        _stats.Completed += n;
        bool stopped = false;
        Span<int> statuses = stackalloc int[n];
        for (int k = 0; k < n; k++)
        {
            UrbSlot m = _groupScratch[k];
            int got = stopped ? 0 : Math.Clamp(actual - m.GroupOffset, 0, m.GroupLength);
            int status;
            if (stopped)
            {
                status = USBIF_STATUS_SHUTDOWN;
            }
            else if (got == m.GroupLength)
            {
                status = m.Cancelled ? USBIF_STATUS_SHUTDOWN : USBIF_STATUS_OK;
            }
            else
            {
                // The transfer stopped in this request: short (-EREMOTEIO, as SHORT_NOT_OK asks), stalled, cancelled...
                status = linuxStatus != 0 ? UsbifStatus.FromLinuxStatus(linuxStatus)
                    : m.Cancelled || cancelled ? USBIF_STATUS_SHUTDOWN : USBIF_STATUS_OK;
                stopped = true;
            }
            statuses[k] = status;
            _mergeLengths[k] = got;
        }
        // IN data back to the guest: every member's pages in one grant-copy call.
        int copiedMembers = n;
        if (t.IsIn && _evtchn is not null)
        {
            fixed (byte* buf = t.Buffer)
            {
                copiedMembers = CopyGroup(0, n, buf, _mergeLengths, toGuest: true, _groupScratch);
            }
        }
        for (int k = 0; k < n; k++)
        {
            UrbSlot m = _groupScratch[k];
            _groupScratch[k] = null!;
            int status = statuses[k];
            int got = _mergeLengths[k];
            if (k >= copiedMembers && got > 0 && t.IsIn && !MemberCopied(k))
            {
                status = USBIF_STATUS_INVAL;
                got = 0;
            }
            _stats.Bytes += got;
            Finish(m, status, got);
        }
        _mergedTransfers.Push(t);
        // As for a single transfer: the copies back to the guest (and the answers) count as grant work.
        if (t.IsIn)
        {
            _stats.GrantTicks += Math.Max(0, Stopwatch.GetTimestamp() - now);
        }
    }

    /// <summary>
    /// True if the data segments form one virtually contiguous buffer once their pages are mapped side by
    /// side: the first ends at its page's end, the middle ones are whole pages, the last starts at 0.
    /// (xen-hcd makes them from one transfer buffer, so they do.)
    /// </summary>
    private static bool IsOneBuffer(ref usbif_urb_request req)
    {
        int n = req.nr_buffer_segs;
        for (int i = 0; i < n; i++)
        {
            usbif_request_segment seg = req.seg[i];
            if ((i > 0 && seg.offset != 0) || (i < n - 1 && seg.offset + seg.length != PageSize))
            {
                return false;
            }
        }
        return n > 0;
    }

    /// <summary>Maps the data pages side by side and points the transfer at them. IN data needs them writable.</summary>
    private bool TryMapSegments(UrbSlot slot, UsbTransfer t, int dataLength, bool writable)
    {
        int n = slot.Request.nr_buffer_segs;
        Span<GrantRef> refs = stackalloc GrantRef[n];
        for (int i = 0; i < n; i++)
        {
            refs[i] = new GrantRef(slot.Request.seg[i].gref);
        }
        GrantMapping mapping;
        try
        {
            _stats.GrantCalls++;
            _stats.GrantSegments += n;
            mapping = _grants.Map(Frontend, refs, writable);
        }
        catch (GrantException)
        {
            return false;
        }
        slot.Mapping = mapping;
        t.UseExternalBuffer(mapping.Address + slot.Request.seg[0].offset, dataLength);
        _stats.Mapped++;
        return true;
    }

    /// <summary>Grant-copies between the guest's segments and the transfer buffer. Returns false if any segment failed.</summary>
    private unsafe bool CopySegments(ref usbif_urb_request req, UsbTransfer t, int bufferOffset, int length, bool toGuest)
    {
        fixed (byte* buf = t.Buffer)
        {
            return CopySegmentRange(ref req, 0, req.nr_buffer_segs, buf + bufferOffset, length, toGuest);
        }
    }

    /// <summary>
    /// Grant-copies <paramref name="length"/> bytes between segments [<paramref name="first"/>, <paramref name="end"/>) of
    /// the request (taken in order, as one run of bytes) and <paramref name="local"/>, in one batch.
    /// </summary>
    private unsafe bool CopySegmentRange(ref usbif_urb_request req, int first, int end, byte* local, int length, bool toGuest)
    {
        int n = FillCopySegments(ref req, first, end, local, length, toGuest, _copySegments);
        if (n == 0)
        {
            return true;
        }
        _stats.GrantCalls++;
        _stats.GrantSegments += n;
        return _grants.Copy(Frontend, _copySegments.AsSpan(0, n));
    }

    /// <summary>
    /// Fills <paramref name="into"/> with the copy operations for <paramref name="length"/> bytes between segments
    /// [<paramref name="first"/>, <paramref name="end"/>) of the request, taken in order as one run of bytes, and
    /// <paramref name="local"/>. Returns how many it wrote.
    /// </summary>
    private static unsafe int FillCopySegments(ref usbif_urb_request req, int first, int end, byte* local, int length, bool toGuest, Span<GrantCopySegment> into)
    {
        int n = 0;
        int done = 0;
        for (int i = first; i < end && done < length; i++)
        {
            usbif_request_segment seg = req.seg[i];
            int len = Math.Min(seg.length, length - done);
            ref GrantCopySegment c = ref into[n++];
            c.Ref = new GrantRef(seg.gref);
            c.Offset = seg.offset;
            c.Length = (ushort)len;
            c.ToGuest = toGuest;
            c.Local = (nint)(local + done);
            c.Status = 0;
            done += len;
        }
        return n;
    }

    /// <summary>After <see cref="CopyGroup"/>: true if every segment of member <paramref name="k"/> was copied.</summary>
    private bool MemberCopied(int k)
    {
        for (int i = k == 0 ? 0 : _groupCopyEnds[k - 1]; i < _groupCopyEnds[k]; i++)
        {
            if (_groupCopies[i].Status != GrantStatus.Okay)
            {
                return false;
            }
        }
        return true;
    }

    private void HandleUnlink(ushort id, int port, ushort unlinkId)
    {
        UrbSlot? target = FindInFlight(unlinkId);
        if (target is null || target.Port != port)
        {
            // Nothing of that id is in flight (it may just have completed): usbif.h answers -ENODEV.
            Respond(id, USBIF_STATUS_NODEV, 0);
            return;
        }
        target.Cancelled = true;
        if (target.OperationPending)
        {
            // A device operation cannot be called back; it is answered when it returns.
            Respond(id, USBIF_STATUS_OK, 0);
            return;
        }
        // A request merged with others is unlinked by cancelling their common transfer; those whose
        // data already arrived still succeed, the rest are answered SHUTDOWN.
        CancelTransfers(target.Lead ?? target, _ports[port].Device);
        Respond(id, USBIF_STATUS_OK, 0);
    }

    /// <summary>Cancels the transfer <paramref name="s"/> owns: one, or every URB of an isochronous request.</summary>
    private static void CancelTransfers(UrbSlot s, IUsbHostDevice? device)
    {
        if (device is null || s.Transfer is not { } t)
        {
            return;
        }
        device.Cancel(t);
        if (s.HasIsoInFlight)
        {
            foreach (UsbTransfer? extra in s.Iso!.ExtraChunks)
            {
                device.Cancel(extra!);
            }
        }
    }

    private UrbSlot? FindInFlight(ushort id)
    {
        foreach (UrbSlot s in _slots)
        {
            if (s.InFlight && s.Request.id == id)
            {
                return s;
            }
        }
        return null;
    }

    /// <summary>
    /// Cancels the URBs of one port (or of every port when <paramref name="port"/> is 0). Each still
    /// completes through its owner (devices complete a cancelled transfer with -ENOENT, and a disposed
    /// device completes all it held), and is answered with an error then.
    /// </summary>
    private void CancelInFlight(int port)
    {
        foreach (UrbSlot s in _slots)
        {
            if (port != 0 && s.Port != port)
            {
                continue;
            }
            if (s.Transfer is not null)
            {
                s.Cancelled = true;
                CancelTransfers(s, _ports[s.Port].Device);
            }
            else if (s.OperationPending)
            {
                s.Cancelled = true;
            }
        }
    }

    public void OnTransferCompleted(UsbTransfer transfer)
    {
        if (_loop.IsLoopThread)
        {
            // Inline from a device's reap (or from within our own dispatch): an exception here is this
            // controller's failure, not the device's.
            try
            {
                Complete(_slots[transfer.Tag], transfer);
                if (_dispatchDepth == 0)
                {
                    // From a device's reap: the answers of every URB reaped in this turn of the loop are pushed
                    // (and the guest notified) once, at its end.
                    _loop.RequestFlush(this);
                }
            }
            catch (Exception e)
            {
                Fail(e);
            }
            return;
        }
        _foreignCompletions.Enqueue(transfer);
        if (Interlocked.Exchange(ref _foreignDrainScheduled, 1) == 0)
        {
            _loop.Post(_drainForeignCompletions);
        }
    }

    private void DrainForeignCompletions()
    {
        Volatile.Write(ref _foreignDrainScheduled, 0);
        Contained(static c =>
        {
            c.DrainForeignCompletionsNow();
            c.PushResponses();
        });
    }

    private void DrainForeignCompletionsNow()
    {
        while (_foreignCompletions.TryDequeue(out UsbTransfer? transfer))
        {
            Complete(_slots[transfer.Tag], transfer);
        }
    }

    private void Complete(UrbSlot slot, UsbTransfer transfer)
    {
        UsbTransfer? t = slot.Transfer;
        if (t is null || (t != transfer && !(slot.HasIsoInFlight && slot.Iso!.IsExtraChunk(transfer))))
        {
            return; // a transfer the slot let go of (answered already, abandoned): nothing to answer
        }
        if (slot.HasIsoInFlight)
        {
            CompleteIsochronousChunk(slot);
            return;
        }
        CreditDevice(slot);
        if (slot.IsGroupLead)
        {
            CompleteMerged(slot, _loop.Now);
            return;
        }
        int status = UsbifStatus.FromLinuxStatus(t.Status);
        // ActualLength counts the data stage only; never trust it beyond that stage's length.
        int offset = t.Type == UsbTransferType.Control ? UsbTransfer.SetupSize : 0;
        int actual = Math.Clamp(t.ActualLength, 0, t.Length - offset);
        if (slot.Cancelled && status == USBIF_STATUS_OK)
        {
            status = USBIF_STATUS_SHUTDOWN;
        }
        bool isIn = t.Type == UsbTransferType.Control ? (slot.Request.u_ctrl & 0x80) != 0 : t.IsIn;
        long now = _loop.Now;
        _stats.DeviceTicks += Math.Max(0, now - slot.SubmittedAt);
        _stats.Completed++;
        bool granted = slot.Mapping is not null;
        if (isIn && actual > 0 && _evtchn is not null && slot.Mapping is null)
        {
            granted = true;
            if (!CopySegments(ref slot.Request, t, offset, actual, toGuest: true))
            {
                status = USBIF_STATUS_INVAL;
                actual = 0;
            }
        }
        // Unmapping (in Finish) costs as much as mapping: count it with the grant work.
        Finish(slot, status, actual);
        _stats.Bytes += actual;
        if (granted)
        {
            _stats.GrantTicks += Math.Max(0, Stopwatch.GetTimestamp() - now);
        }
    }

    /// <summary>
    /// Answers every request in flight now, with <paramref name="status"/>, without waiting for the devices:
    /// their transfers are cancelled and abandoned (a late completion finds a slot that let go of it and
    /// is dropped). For when waiting cannot work: a failure of our own, a device that does not give its
    /// URBs back before a removal's deadline. xen-hcd's teardown needs an answer for every URB.
    /// </summary>
    public void AnswerAllInFlight(int status = USBIF_STATUS_SHUTDOWN)
    {
        AssertLoopThread();
        // Consumed requests that waited for device memory are in flight for the guest too (unless the one
        // being handled when something threw already has its slot: it is answered with the slots).
        while (_batchNext < _batchCount)
        {
            ushort id = _batch[_batchNext++].id;
            if (FindInFlight(id) is null)
            {
                Respond(id, status, 0);
            }
        }
        foreach (UrbSlot s in _slots)
        {
            if (!s.InFlight)
            {
                continue;
            }
            UsbTransfer? t = s.Transfer;
            if (t is not null && s.IsGroupLead)
            {
                _mergedTransfersMade--; // that pooled buffer is the device's now; make another when needed
            }
            int port = s.Port;
            int extras = 0;
            if (s.HasIsoInFlight)
            {
                foreach (UsbTransfer? extra in s.Iso!.ExtraChunks)
                {
                    _cancelScratch[extras++] = extra!;
                }
            }
            CreditDevice(s);
            s.AbandonTransfers();
            Finish(s, status, 0);
            // After the answer: a device that completes the cancel at once finds a slot that let go of it.
            if (t is not null)
            {
                _ports[port].Device?.Cancel(t);
            }
            for (int k = 0; k < extras; k++)
            {
                _ports[port].Device?.Cancel(_cancelScratch[k]);
                _cancelScratch[k] = null!;
            }
        }
        PushResponses();
    }

    private void Finish(UrbSlot slot, int status, int actual, int errorCount = 0, ushort startFrame = 0)
    {
        ushort id = slot.Request.id;
        bool current = slot.Epoch == _epoch;
        slot.Release();
        _freeSlots.Push(slot);
        if (current && _evtchn is not null && !_ringError)
        {
            Respond(id, status, actual, errorCount, startFrame);
        }
    }

    private void Reject(ushort id, int status, string reason, int port)
    {
        _logger.RequestRejected(Frontend.Value, DevId, id, port, reason, status);
        Respond(id, status, 0);
    }

    private void Respond(ushort id, int status, int actualLength, int errorCount = 0, ushort startFrame = 0)
    {
        _urbRing.PutResponse(new usbif_urb_response
        {
            id = id,
            status = status,
            actual_length = actualLength,
            error_count = errorCount,
            start_frame = startFrame,
        });
    }
}
