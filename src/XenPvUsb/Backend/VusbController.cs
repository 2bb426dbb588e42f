using Microsoft.Extensions.Logging;
using XenPvUsb.Logging;
using XenPvUsb.Rings;
using XenPvUsb.Usb;
using XenPvUsb.Usbif;
using XenPvUsb.Xen;

namespace XenPvUsb.Backend;

/// <summary>
/// The data path of one virtual host controller: both rings, the event channel, the ports and the
/// URBs in flight. Everything here runs on the event loop thread (completions from other threads
/// are queued back to it), so it takes no locks. Cf. QEMU hw/usb/xen-usb.c.
/// </summary>
internal sealed partial class VusbController : IEventHandler, IBusyPollable, IFaultContained, IUsbTransferOwner, IDisposable
{
    private readonly IGrantTable _grants;
    private readonly EventLoop _loop;
    private readonly ILogger _logger;
    private readonly VusbPort[] _ports;
    private readonly UrbSlot[] _slots;
    private readonly Stack<UrbSlot> _freeSlots;
    private readonly Queue<usbif_conn_response> _pendingConnEvents = new();
    private readonly System.Collections.Concurrent.ConcurrentQueue<UsbTransfer> _foreignCompletions = new();
    private readonly Action _drainForeignCompletions;
    private readonly GrantCopySegment[] _copySegments = new GrantCopySegment[Usbif.Usbif.USBIF_MAX_SEGMENTS_PER_REQUEST];

    /// <summary>Merged bulk IN transfers: at most this many bytes, this many in flight, members' lengths (but the last) multiples of this.</summary>
    private const int MaxMergedBytes = 256 * 1024;
    private const int MaxMergedInFlight = 4;
    private const int MergeAlignment = 1024;

    /// <summary>
    /// Requests served in one pass before the controller yields the loop to everyone else (and asks to
    /// be polled again): a guest that floods its ring, with requests refused at once or not, cannot
    /// keep the thread. Two rings' worth.
    /// </summary>
    public const int RequestsPerPass = 2 * Usbif.Usbif.USB_URB_RING_SIZE;

    private readonly usbif_urb_request[] _batch = new usbif_urb_request[Usbif.Usbif.USB_URB_RING_SIZE];
    private readonly int[] _mergeLengths = new int[Usbif.Usbif.USB_URB_RING_SIZE];
    private readonly Stack<UsbTransfer> _mergedTransfers = new(MaxMergedInFlight);
    private int _mergedTransfersMade;
    private readonly UrbSlot[] _groupScratch = new UrbSlot[Usbif.Usbif.USB_URB_RING_SIZE];

    private BackRing<usbif_urb_request, usbif_urb_response> _urbRing;
    private BackRing<usbif_conn_request, usbif_conn_response> _connRing;
    private GrantMapping? _urbMapping;
    private GrantMapping? _connMapping;
    private IEventChannel? _evtchn;
    private long _evtchnRegistration;
    private bool _ringError;
    private int _dispatchDepth;
    private int _foreignDrainScheduled;
    private int _epoch;
    private bool _closing;
    private bool _failed;
    private bool _suspended;
    private ControllerJournal? _journal;
    private int _passBudget;
    private UrbStatistics _stats;

    public VusbController(DomId frontend, int devId, int numPorts, int usbVersion, IGrantTable grants, EventLoop loop, ILogger logger,
        GrantMode grantMode = GrantMode.Copy, bool mergeBulkIn = true)
    {
        if (numPorts < 1 || numPorts > Usbif.Usbif.USBIF_MAX_PORTNR)
        {
            throw new ArgumentOutOfRangeException(nameof(numPorts));
        }
        Frontend = frontend;
        DevId = devId;
        UsbVersion = usbVersion;
        GrantMode = grantMode;
        MergeBulkIn = mergeBulkIn;
        _grants = grants;
        _loop = loop;
        _logger = logger;
        _ports = new VusbPort[numPorts + 1];
        for (int i = 1; i <= numPorts; i++)
        {
            _ports[i] = new VusbPort(i);
        }
        _slots = new UrbSlot[Usbif.Usbif.USB_URB_RING_SIZE];
        _freeSlots = new Stack<UrbSlot>(_slots.Length);
        for (int i = _slots.Length - 1; i >= 0; i--)
        {
            _slots[i] = new UrbSlot(i, this);
            _freeSlots.Push(_slots[i]);
        }
        _drainForeignCompletions = DrainForeignCompletions;
    }

    public DomId Frontend { get; }

    public int DevId { get; }

    public int UsbVersion { get; }

    public int NumPorts => _ports.Length - 1;

    /// <summary>How bulk and interrupt data reach the device (control transfers are always grant-copied).</summary>
    public GrantMode GrantMode { get; }

    /// <summary>Whether queued bulk IN requests may share one device transfer (grant copy mode only).</summary>
    public bool MergeBulkIn { get; }

    /// <summary>Counters of the URBs served since the controller was made (read on the loop thread).</summary>
    public UrbStatistics Statistics => _stats;

    public bool IsConnected => _evtchn is not null;

    /// <summary>Latched when the frontend broke the ring protocol; the controller then serves nothing.</summary>
    public bool HasRingError => _ringError;

    /// <summary>Raised (on the loop thread) once when the ring error latches.</summary>
    public Action<VusbController>? RingErrorLatched { get; set; }

    /// <summary>
    /// Raised (on the loop thread) once when the controller's own work threw: it answers what was in
    /// flight and serves on in closing mode; the owner should close the connection.
    /// </summary>
    public Action<VusbController>? Failed { get; set; }

    /// <summary>
    /// Closing mode (toolstack removal, a failure): URBs in flight are cancelled and answered, new
    /// submits are answered SHUTDOWN without reaching a device, unlinks as usual, so that the
    /// frontend's teardown (xen-hcd's usb_remove_hcd unlinks and waits for every URB) can finish.
    /// </summary>
    public bool IsClosing => _closing;

    /// <summary>URBs submitted to devices and not yet answered.</summary>
    public int InFlight => _slots.Length - _freeSlots.Count;

    public IUsbHostDevice? DeviceAt(int port) => port >= 1 && port <= NumPorts ? _ports[port].Device : null;

    /// <summary>
    /// Maps both rings and binds the event channel (frontend reached Connected). Throws on a bad grant.
    /// <paramref name="journal"/>, if given, receives the recovery snapshots of this connection.
    /// </summary>
    public void Connect(GrantRef urbRingRef, GrantRef connRingRef, IEventChannel evtchn, ControllerJournal? journal = null)
    {
        AssertLoopThread();
        MapRings(urbRingRef, connRingRef, out GrantMapping urb, out GrantMapping conn);
        _urbRing = new BackRing<usbif_urb_request, usbif_urb_response>(urb.Address);
        _connRing = new BackRing<usbif_conn_request, usbif_conn_response>(conn.Address);
        for (int p = 1; p <= NumPorts; p++)
        {
            _ports[p].Address = 0;
            _ports[p].QueuedSpeed = Usbif.Usbif.USBIF_SPEED_NONE;
            _ports[p].AnnouncedSpeed = Usbif.Usbif.USBIF_SPEED_NONE;
        }
        Bind(evtchn, journal);
        _logger.ControllerConnected(Frontend.Value, DevId, urbRingRef.Value, connRingRef.Value, evtchn.LocalPort.Value);
        SaveSnapshot(0);

        // Devices assigned before the frontend connected are announced now (QEMU does the same).
        for (int p = 1; p <= NumPorts; p++)
        {
            if (_ports[p].Device is not null)
            {
                QueueConnEvent(p, _ports[p].WireSpeed);
            }
        }
        Contained(static c =>
        {
            c.FlushConnEvents();
            c.ProcessRings();
        });
    }

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
        SaveSnapshot(0);
        // Requests wait until the devices are back on their ports (ResumeAdopted).
        _suspended = true;
        Contained(static c =>
        {
            c.PushResponses();
            // The guest may have been waiting on us since before the predecessor died.
            c._evtchn?.Notify();
        });
    }

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

    /// <summary>A snapshot fits a live ring: published ≤ answered ≤ consumed ≤ produced, all within a ring's worth.</summary>
    private static bool Fits(uint published, uint answered, uint consumed, uint produced, uint size) =>
        answered - published <= size && consumed - answered <= size && produced - consumed <= size - (consumed - answered);

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

    private void MapRings(GrantRef urbRingRef, GrantRef connRingRef, out GrantMapping urb, out GrantMapping conn)
    {
        if (IsConnected)
        {
            throw new InvalidOperationException("already connected");
        }
        urb = _grants.Map(Frontend, urbRingRef, writable: true);
        try
        {
            conn = _grants.Map(Frontend, connRingRef, writable: true);
        }
        catch
        {
            urb.Dispose();
            throw;
        }
        _urbMapping = urb;
        _connMapping = conn;
    }

    private void Bind(IEventChannel evtchn, ControllerJournal? journal)
    {
        _ringError = false;
        _closing = false;
        _failed = false;
        _suspended = false;
        _epoch++;
        _journal = journal;
        _evtchn = evtchn;
        _evtchnRegistration = _loop.Register(evtchn.Fd, this);
    }

    /// <summary>
    /// Records the recovery snapshot (see <see cref="ControllerSnapshot"/>). <paramref name="consumedUnhandled"/>
    /// is how many requests at the end of the batch are consumed but not yet in a slot or answered: they
    /// count as in flight.
    /// </summary>
    private unsafe void SaveSnapshot(int consumedUnhandled)
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
        for (int i = 0; i < consumedUnhandled && n < ControllerSnapshot.MaxInFlight; i++)
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
        _loop.Unregister(_evtchnRegistration, _evtchn.Fd);
        _loop.RemoveHot(this);
        IEventChannel evtchn = _evtchn;
        _evtchn = null;
        evtchn.Dispose();
        _urbMapping?.Dispose();
        _connMapping?.Dispose();
        _urbMapping = null;
        _connMapping = null;
        _urbRing = default;
        _connRing = default;
        _pendingConnEvents.Clear();
        _journal?.Dispose();
        _journal = null;
    }

    /// <summary>Enters closing mode (see <see cref="IsClosing"/>). Loop thread.</summary>
    public void BeginClose()
    {
        AssertLoopThread();
        if (_evtchn is null || _closing)
        {
            return;
        }
        _closing = true;
        _pendingConnEvents.Clear();
        Contained(static c =>
        {
            c.CancelInFlight(port: 0);
            c.PushResponses();
        });
    }

    public void OnFault(Exception exception) => Fail(exception);

    /// <summary>
    /// This controller's own work threw (our bug, not the guest's): answer what is in flight and serve on
    /// in closing mode so the guest's driver can shut down cleanly; a second failure stops it dead.
    /// </summary>
    private void Fail(Exception exception)
    {
        if (_failed || _evtchn is null)
        {
            _ringError = true;
            _loop.RemoveHot(this);
            _logger.HandlerFailed(nameof(VusbController), exception);
            return;
        }
        _failed = true;
        _logger.ControllerFailed(Frontend.Value, DevId, exception);
        // The loop stopped waiting on the event channel when the handler threw: wait on it again.
        _loop.Unregister(_evtchnRegistration, _evtchn.Fd);
        _evtchnRegistration = _loop.Register(_evtchn.Fd, this);
        _closing = true;
        _pendingConnEvents.Clear();
        // Our state may be off after the exception: answer everything now rather than trust the completions.
        Contained(static c => c.AnswerAllInFlight());
        Failed?.Invoke(this);
    }

    /// <summary>Runs controller work whose exceptions are this controller's failure, not the caller's.</summary>
    private void Contained(Action<VusbController> work)
    {
        try
        {
            work(this);
        }
        catch (Exception e)
        {
            Fail(e);
        }
    }

    /// <summary>
    /// Tears the connection down: URBs in flight are cancelled and dropped without response (the ring
    /// is going away), rings unmapped, event channel unbound. Devices stay assigned to their ports.
    /// </summary>
    public void Disconnect()
    {
        AssertLoopThread();
        if (_evtchn is null)
        {
            return;
        }
        _loop.Unregister(_evtchnRegistration, _evtchn.Fd);
        _loop.RemoveHot(this);
        IEventChannel evtchn = _evtchn;
        _evtchn = null;
        CancelInFlight(port: 0);
        DrainForeignCompletionsNow();
        evtchn.Dispose();
        _urbMapping?.Dispose();
        _connMapping?.Dispose();
        _urbMapping = null;
        _connMapping = null;
        _urbRing = default;
        _connRing = default;
        _pendingConnEvents.Clear();
        _journal?.Delete();
        _journal = null;
        _logger.ControllerDisconnected(Frontend.Value, DevId);
        if (_stats.Completed > 0)
        {
            _logger.ControllerStatistics(Frontend.Value, DevId, GrantMode, _stats.Completed, _stats.Bytes, _stats.Mapped,
                _stats.MeanDeviceMicroseconds, _stats.MeanGrantMicroseconds, _stats.MeanBatch,
                _stats.Merged, _stats.MergedTransfers);
        }
    }

    /// <summary>Puts a claimed device on a port and tells the guest (if connected).</summary>
    public void AttachDevice(int port, IUsbHostDevice device, byte wireSpeed)
    {
        AssertLoopThread();
        VusbPort p = _ports[port];
        if (p.Device is not null)
        {
            throw new InvalidOperationException($"port {port} is occupied");
        }
        p.Device = device;
        p.WireSpeed = wireSpeed;
        if (IsConnected && !_closing && p.QueuedSpeed != wireSpeed)
        {
            // A new device for the guest: it enumerates it from address 0. (A port the guest already
            // knows at this speed is a device re-attached after a daemon restart: nothing changes for it.)
            p.Address = 0;
            QueueConnEvent(port, wireSpeed);
            Contained(static c =>
            {
                c.FlushConnEvents();
                c.PushResponses();
            });
        }
    }

    /// <summary>
    /// Takes the device off a port: its URBs in flight complete with an error, the guest is told of the
    /// disconnect. Returns the device for the caller to release (or null if the port was empty).
    /// </summary>
    public IUsbHostDevice? DetachDevice(int port)
    {
        AssertLoopThread();
        VusbPort p = _ports[port];
        IUsbHostDevice? device = p.Device;
        if (device is null)
        {
            return null;
        }
        p.Device = null;
        p.Address = 0;
        p.WireSpeed = Usbif.Usbif.USBIF_SPEED_NONE;
        Contained(c => c.CancelInFlight(port));
        if (IsConnected && !_closing)
        {
            QueueConnEvent(port, Usbif.Usbif.USBIF_SPEED_NONE);
        }
        Contained(static c =>
        {
            c.FlushConnEvents();
            c.PushResponses();
        });
        return device;
    }

    /// <summary>Takes a device off its port without a word to the guest (the daemon stops; a successor attaches it again).</summary>
    public IUsbHostDevice? TakeDevice(int port)
    {
        AssertLoopThread();
        IUsbHostDevice? device = _ports[port].Device;
        _ports[port].Device = null;
        return device;
    }

    public void OnEvent(uint events)
    {
        if (_evtchn is null)
        {
            return;
        }
        _evtchn.ConsumePending();
        ProcessRings();
    }

    public void Dispose()
    {
        Disconnect();
        for (int p = 1; p <= NumPorts; p++)
        {
            _ports[p].Device?.Dispose();
            _ports[p].Device = null;
        }
    }

    public bool Poll() => ProcessRings();

    public bool Arm() => _evtchn is not null && !_ringError && !_suspended && _urbRing.FinalCheckForRequests();

    /// <summary>Serves both rings; returns true if any URB request was consumed.</summary>
    private bool ProcessRings()
    {
        if (_ringError || _evtchn is null || _suspended)
        {
            return false;
        }
        uint before = _urbRing.ReqCons;
        _passBudget = RequestsPerPass;
        _dispatchDepth++;
        try
        {
            FlushConnEvents();
            ProcessUrbRequests();
        }
        finally
        {
            _dispatchDepth--;
        }
        PushResponses();
        return _urbRing.ReqCons != before;
    }

    private void PushResponses()
    {
        if (_evtchn is null || _ringError)
        {
            return;
        }
        // The snapshot first: a successor that finds the push undone finishes it from the snapshot.
        SaveSnapshot(0);
        bool notify = _urbRing.IsAttached && _urbRing.PushResponsesAndCheckNotify();
        notify |= _connRing.IsAttached && _connRing.PushResponsesAndCheckNotify();
        if (notify)
        {
            _evtchn.Notify();
        }
    }

    private void QueueConnEvent(int port, byte speed)
    {
        _ports[port].QueuedSpeed = speed;
        _pendingConnEvents.Enqueue(new usbif_conn_response { portnum = (byte)port, speed = speed });
    }

    /// <summary>Each event consumes one of the frontend's dummy requests; without one it waits in the queue.</summary>
    private void FlushConnEvents()
    {
        if (_pendingConnEvents.Count == 0 || !_connRing.IsAttached || _ringError)
        {
            return;
        }
        if (!_connRing.TryReadRequestProd(out uint prod))
        {
            LatchRingError("conn ring", prod);
            return;
        }
        while (_pendingConnEvents.Count > 0 && _connRing.ReqCons != prod)
        {
            if (!_connRing.TryCopyNextRequest(out usbif_conn_request req))
            {
                LatchRingError("conn ring", prod);
                return;
            }
            usbif_conn_response rsp = _pendingConnEvents.Dequeue();
            rsp.id = req.id;
            _connRing.PutResponse(rsp);
            _ports[rsp.portnum].AnnouncedSpeed = rsp.speed;
            _logger.PortEventSent(Frontend.Value, DevId, rsp.portnum, rsp.speed);
        }
    }

    private void LatchRingError(string ring, uint prod)
    {
        if (_ringError)
        {
            return;
        }
        _ringError = true;
        _logger.RingError(Frontend.Value, DevId, ring, prod);
        RingErrorLatched?.Invoke(this);
    }

    private void AssertLoopThread()
    {
        if (!_loop.IsLoopThread)
        {
            throw new InvalidOperationException("controller state is only touched on the event loop thread");
        }
    }

    private sealed class VusbPort
    {
        public VusbPort(int number)
        {
            Number = number;
        }

        public int Number { get; }

        public IUsbHostDevice? Device { get; set; }

        public byte WireSpeed { get; set; }

        /// <summary>Address the guest gave the device with SET_ADDRESS (0 = default address).</summary>
        public int Address { get; set; }

        /// <summary>The speed of the last conn event queued for this port: what the guest will believe once the queue drains.</summary>
        public byte QueuedSpeed { get; set; }

        /// <summary>The speed of the last conn event put on the ring: what the guest has been told.</summary>
        public byte AnnouncedSpeed { get; set; }
    }
}
