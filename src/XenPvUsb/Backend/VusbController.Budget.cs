using XenPvUsb.Logging;
using XenPvUsb.Usb;

namespace XenPvUsb.Backend;

// Budgets: the usbfs memory a controller may have at its devices, and the buffers an idle controller gives back.
internal sealed partial class VusbController
{
    /// <summary>Cap on the usbfs memory (buffers plus per-URB overhead) this controller has at devices at once.</summary>
    public long UsbfsBudget { get; init; } = DefaultUsbfsBudget;

    /// <summary>usbfs memory at devices now (loop thread).</summary>
    public long DeviceBytesInFlight => _deviceBytes;

    /// <summary>Transfer buffers the controller keeps for its next requests (loop thread): what an idle controller gives back.</summary>
    public long BufferBytesHeld
    {
        get
        {
            long n = 0;
            foreach (UrbSlot slot in _slots)
            {
                n += (slot.SmallTransfer?.Buffer.Length ?? 0) + (slot.LargeTransfer?.Buffer.Length ?? 0);
            }
            foreach (UsbTransfer t in _mergedTransfers)
            {
                n += t.Buffer.Length;
            }
            return n;
        }
    }

    /// <summary>
    /// Loop thread: after <see cref="IdleRelease"/> without a request and with nothing in flight, the transfer
    /// buffers (up to 16 × (4 + 64) KiB pinned, plus 4 × 256 KiB for merged reads) go back, and the
    /// devices forget what they kept for them; the next request allocates afresh.
    /// </summary>
    internal void ReleaseBuffersIfIdle(bool force = false)
    {
        if (!_buffersHeld || InFlight != 0 || _batchNext < _batchCount)
        {
            return;
        }
        if (!force && System.Diagnostics.Stopwatch.GetElapsedTime(_lastRequest) < IdleRelease)
        {
            return;
        }
        foreach (UrbSlot slot in _slots)
        {
            Forget(slot.SmallTransfer);
            Forget(slot.LargeTransfer);
            if (slot.Iso is { } iso)
            {
                foreach (UsbTransfer? extra in iso.AllExtraChunks)
                {
                    Forget(extra);
                }
            }
            slot.AbandonTransfers();
        }
        while (_mergedTransfers.TryPop(out UsbTransfer? t))
        {
            Forget(t);
            _mergedTransfersMade--;
        }
        _buffersHeld = false;
        _stats.BufferReleases++;
        _logger.BuffersReleased(Frontend.Value, DevId);
    }

    private void Forget(UsbTransfer? transfer)
    {
        if (transfer is null)
        {
            return;
        }
        for (int p = 1; p <= NumPorts; p++)
        {
            _ports[p].Device?.Forget(transfer);
        }
    }

    private void PostIdleCheck() => _loop.Post(_idleCheck);

    private void StopIdleTimer()
    {
        _idleTimer?.Dispose();
        _idleTimer = null;
        _batchNext = _batchCount = 0;
    }

    /// <summary>
    /// What usbfs charges against usbfs_memory_mb for a transfer (devio.c: the buffer plus its struct
    /// async and struct urb, a few hundred bytes): the memory this controller may have in the kernel at once
    /// is capped by <see cref="UsbfsBudget"/>, so that one guest cannot exhaust what every usbfs user in
    /// dom0 shares. One transfer is always allowed when none is in flight, whatever its size.
    /// </summary>
    private bool FitsBudget(int transferBytes)
    {
        long cost = transferBytes + UsbfsOverheadPerUrb;
        return _deviceBytes == 0 || _deviceBytes + cost <= UsbfsBudget;
    }

    private void ChargeDevice(UrbSlot slot, int transferBytes)
    {
        slot.DeviceCost = transferBytes + UsbfsOverheadPerUrb;
        _deviceBytes += slot.DeviceCost;
        if (_deviceBytes > _stats.PeakDeviceBytes)
        {
            _stats.PeakDeviceBytes = _deviceBytes;
        }
    }

    private void CreditDevice(UrbSlot slot)
    {
        if (slot.DeviceCost == 0)
        {
            return;
        }
        _deviceBytes -= slot.DeviceCost;
        slot.DeviceCost = 0;
        if (_batchNext < _batchCount && _evtchn is not null)
        {
            // Requests wait for memory: serve them once this completion's work is done.
            _loop.RequestPoll(this);
        }
    }
}
