using XenPvUsb.Logging;
using XenPvUsb.Rings;
using XenPvUsb.Usb;
using XenPvUsb.Usbif;
using XenPvUsb.Xen;

namespace XenPvUsb.Backend;

// Restart safety: the recovery snapshot written before every push, re-adoption of a predecessor's
// connection, and letting go of one for a successor (design.md, "Restart is normal").
internal sealed partial class VusbController
{
    /// <summary>
    /// Takes over a connection a predecessor daemon served (its journal's snapshot): the rings at the
    /// snapshot's indexes, the guest's device addresses and what it was told of each port. A push the
    /// predecessor did not finish is finished; the requests it had in flight are answered IOERROR (its
    /// URBs died with it; xen-hcd gives -EPROTO, which class drivers recover from by retrying or
    /// resetting); requests posted since are then served as usual. Devices are attached afterwards
    /// with <see cref="AttachDevice"/>, which tells the guest nothing it already knows. Throws
    /// <see cref="InvalidDataException"/> if the snapshot does not fit the rings (the frontend is then
    /// served afresh).
    /// </summary>
    public unsafe void Adopt(GrantRef urbRingRef, GrantRef connRingRef, IEventChannel evtchn, ControllerJournal journal, in ControllerSnapshot snapshot)
    {
        AssertLoopThread();
        MapRings(urbRingRef, connRingRef, out GrantMapping urb, out GrantMapping conn);
        var urbRing = new BackRing<usbif_urb_request, usbif_urb_response>(urb.Address, snapshot.UrbReqCons, snapshot.UrbRspProdPvt);
        var connRing = new BackRing<usbif_conn_request, usbif_conn_response>(conn.Address, snapshot.ConnReqCons, snapshot.ConnRspProdPvt);
        if (!Fits(urbRing.SharedResponseProd, snapshot.UrbRspProdPvt, snapshot.UrbReqCons, urbRing.SharedRequestProd, urbRing.Size)
            || !Fits(connRing.SharedResponseProd, snapshot.ConnRspProdPvt, snapshot.ConnReqCons, connRing.SharedRequestProd, connRing.Size)
            || snapshot.ConnReqCons != snapshot.ConnRspProdPvt || snapshot.InFlightCount is < 0 or > ControllerSnapshot.MaxInFlight
            || snapshot.UrbReqCons - snapshot.UrbRspProdPvt < (uint)snapshot.InFlightCount)
        {
            _urbMapping?.Dispose();
            _connMapping?.Dispose();
            _urbMapping = _connMapping = null;
            throw new InvalidDataException("the recovery snapshot does not fit the rings");
        }
        _urbRing = urbRing;
        _connRing = connRing;
        for (int p = 1; p <= NumPorts; p++)
        {
            _ports[p].Address = snapshot.Address[p];
            _ports[p].AnnouncedSpeed = snapshot.AnnouncedSpeed[p];
            _ports[p].QueuedSpeed = snapshot.AnnouncedSpeed[p];
        }
        Bind(evtchn, journal);
        for (int i = 0; i < snapshot.InFlightCount; i++)
        {
            Respond(snapshot.InFlight[i], Usbif.Usbif.USBIF_STATUS_IOERROR, 0);
        }
        _logger.ControllerAdopted(Frontend.Value, DevId, snapshot.InFlightCount, urbRing.SharedRequestProd - snapshot.UrbReqCons);
        SaveSnapshot();
        // Requests wait until the devices are back on their ports (ResumeAdopted).
        _suspended = true;
        Contained(static c =>
        {
            c.PushResponses();
            // The guest may have been waiting on us since before the predecessor died.
            c._evtchn?.Notify();
        });
    }

    /// <summary>A snapshot fits a live ring: published ≤ answered ≤ consumed ≤ produced, all within a ring's worth.</summary>
    private static bool Fits(uint published, uint answered, uint consumed, uint produced, uint size) =>
        answered - published <= size && consumed - answered <= size && produced - consumed <= size - (consumed - answered);

    /// <summary>
    /// After <see cref="Adopt"/> and the devices' return to their ports: ports the guest believes occupied
    /// whose device is gone get their unplug event, and requests are served again.
    /// </summary>
    public void ResumeAdopted()
    {
        AssertLoopThread();
        _suspended = false;
        AnnounceAbsentPorts();
        Contained(static c => c.ProcessRings());
    }

    private void AnnounceAbsentPorts()
    {
        for (int p = 1; p <= NumPorts; p++)
        {
            if (_ports[p].Device is null && _ports[p].QueuedSpeed != Usbif.Usbif.USBIF_SPEED_NONE)
            {
                QueueConnEvent(p, Usbif.Usbif.USBIF_SPEED_NONE);
            }
        }
        Contained(static c =>
        {
            c.FlushConnEvents();
            c.PushResponses();
        });
    }

    /// <summary>
    /// Records the recovery snapshot (see <see cref="ControllerSnapshot"/>). The batch's requests not yet
    /// handled (consumed, not in a slot, not answered) count as in flight.
    /// </summary>
    private unsafe void SaveSnapshot()
    {
        if (_journal is null)
        {
            return;
        }
        ControllerSnapshot snap = default;
        snap.UrbReqCons = _urbRing.ReqCons;
        snap.UrbRspProdPvt = _urbRing.RspProdPvt;
        snap.ConnReqCons = _connRing.ReqCons;
        snap.ConnRspProdPvt = _connRing.RspProdPvt;
        int n = 0;
        foreach (UrbSlot slot in _slots)
        {
            if (slot.InFlight && n < ControllerSnapshot.MaxInFlight && slot.Epoch == _epoch)
            {
                snap.InFlight[n++] = slot.Request.id;
            }
        }
        for (int i = _batchNext; i < _batchCount && n < ControllerSnapshot.MaxInFlight; i++)
        {
            snap.InFlight[n++] = _batch[i].id;
        }
        snap.InFlightCount = n;
        for (int p = 1; p <= NumPorts; p++)
        {
            snap.Address[p] = (byte)_ports[p].Address;
            snap.AnnouncedSpeed[p] = _ports[p].AnnouncedSpeed;
        }
        _journal.Write(in snap);
    }

    /// <summary>
    /// The daemon stops and a successor will take over: serve nothing more (requests wait in the ring),
    /// let what is in flight finish (the caller waits a little, then <see cref="AnswerAllInFlight"/>),
    /// then <see cref="Release"/>.
    /// </summary>
    public void Suspend()
    {
        AssertLoopThread();
        _suspended = true;
        _loop.RemoveHot(this);
    }

    /// <summary>
    /// Lets go of the connection without telling the guest anything: rings unmapped, event channel
    /// unbound, the journal kept for a successor. With <paramref name="crash"/>, nothing is answered or
    /// pushed first: what the kernel does when the daemon's process dies (tests). Devices are the caller's.
    /// </summary>
    public void Release(bool crash = false)
    {
        AssertLoopThread();
        if (_evtchn is null)
        {
            return;
        }
        if (!crash)
        {
            Contained(static c => c.PushResponses());
        }
        Unbind(cancelInFlight: false);
        _journal?.Dispose();
        _journal = null;
    }

    /// <summary>Takes a device off its port without a word to the guest (the daemon stops; a successor attaches it again).</summary>
    public IUsbHostDevice? TakeDevice(int port)
    {
        AssertLoopThread();
        IUsbHostDevice? device = _ports[port].Device;
        _ports[port].Device = null;
        return device;
    }
}
