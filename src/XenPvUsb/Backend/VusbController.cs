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
internal sealed partial class VusbController : IEventHandler, IBusyPollable, IFlushable, IFaultContained, IUsbTransferOwner, IDisposable
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

    /// <summary>Merged bulk transfers: at most this many bytes, this many in flight, members' lengths (but the last) multiples of this.</summary>
    private const int MaxMergedBytes = 256 * 1024;
    private const int MaxMergedInFlight = 4;
    private const int MergeAlignment = 1024;

    /// <summary>
    /// Requests served in one pass before the controller yields the loop to everyone else (and asks to
    /// be polled again): a guest that floods its ring, with requests refused at once or not, cannot
    /// keep the thread. Two rings' worth.
    /// </summary>
    public const int RequestsPerPass = 2 * Usbif.Usbif.USB_URB_RING_SIZE;

    /// <summary>usbfs's own memory per URB beyond its buffer (struct async + struct urb), as charged against usbfs_memory_mb.</summary>
    public const int UsbfsOverheadPerUrb = 512;

    /// <summary>Default cap on the usbfs memory one controller may have in flight: 1/16 of usbfs_memory_mb's default 16 MiB.</summary>
    public const long DefaultUsbfsBudget = 1024 * 1024;

    /// <summary>How long a controller must see no request before it gives its transfer buffers back.</summary>
    public static TimeSpan IdleRelease { get; set; } = TimeSpan.FromSeconds(30);

    private readonly usbif_urb_request[] _batch = new usbif_urb_request[Usbif.Usbif.USB_URB_RING_SIZE];
    private readonly int[] _mergeLengths = new int[Usbif.Usbif.USB_URB_RING_SIZE];
    private readonly Stack<UsbTransfer> _mergedTransfers = new(MaxMergedInFlight);
    private int _mergedTransfersMade;
    private readonly UrbSlot[] _groupScratch = new UrbSlot[Usbif.Usbif.USB_URB_RING_SIZE];

    // A merged transfer's grant copies, all members in one call, and where each member's segments end.
    private readonly GrantCopySegment[] _groupCopies = new GrantCopySegment[Usbif.Usbif.USB_URB_RING_SIZE * Usbif.Usbif.USBIF_MAX_SEGMENTS_PER_REQUEST];
    private readonly int[] _groupCopyEnds = new int[Usbif.Usbif.USB_URB_RING_SIZE];
    private readonly UsbTransfer[] _cancelScratch = new UsbTransfer[UrbRequestValidator.MaxIsoPacketsPerRequest / UsbTransfer.MaxIsoPackets];

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
    private int _batchNext;
    private int _batchCount;
    private long _deviceBytes;
    private long _lastRequest;
    private bool _buffersHeld;
    private Timer? _idleTimer;
    private readonly Action _idleCheck;
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
        _idleCheck = () => Contained(static c => c.ReleaseBuffersIfIdle());
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
        SaveSnapshot();

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
        _batchNext = _batchCount = 0;
        TimeSpan tick = IdleRelease / 3 > TimeSpan.Zero ? IdleRelease / 3 : TimeSpan.FromSeconds(1);
        _idleTimer = new Timer(static s => ((VusbController)s!).PostIdleCheck(), this, tick, tick);
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
        if (_batchNext < _batchCount)
        {
            _loop.RequestPoll(this); // requests that waited for memory are answered SHUTDOWN now
        }
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
        Unbind(cancelInFlight: true);
        _journal?.Delete();
        _journal = null;
        _logger.ControllerDisconnected(Frontend.Value, DevId);
        if (_stats.Completed > 0)
        {
            _logger.ControllerStatistics(Frontend.Value, DevId, GrantMode, _stats.Completed, _stats.Bytes, _stats.Mapped,
                _stats.MeanDeviceMicroseconds, _stats.MeanGrantMicroseconds, _stats.MeanBatch,
                _stats.Merged, _stats.MergedTransfers);
        }
        if (_stats.IsoPackets > 0)
        {
            _logger.IsochronousStatistics(Frontend.Value, DevId, _stats.IsoPackets, _stats.IsoPacketErrors);
        }
    }

    /// <summary>Loop thread: logs this controller's cumulative counters (xenpvusbd does it for every controller on SIGUSR1).</summary>
    public void LogCounters()
    {
        AssertLoopThread();
        UrbStatistics s = _stats;
        double deviceUs = UrbStatistics.Microseconds(s.DeviceTicks);
        double grantUs = UrbStatistics.Microseconds(s.GrantTicks);
        _logger.ControllerCounters(Frontend.Value, DevId, s.Completed, s.Bytes, s.Requests, s.Batches, s.Kicks, s.Notifies, s.Pushes,
            s.GrantCalls, s.GrantSegments, s.Submits, s.Merged, s.MergedTransfers, deviceUs, grantUs);
    }

    /// <summary>
    /// Stops serving the connection: the event channel unbound, the rings unmapped. With
    /// <paramref name="cancelInFlight"/> the URBs in flight are cancelled (and dropped unanswered: the ring
    /// is going away); without, they stay with their devices for the caller to deal with.
    /// </summary>
    private void Unbind(bool cancelInFlight)
    {
        _loop.Unregister(_evtchnRegistration, _evtchn!.Fd);
        _loop.RemoveHot(this);
        StopIdleTimer();
        IEventChannel evtchn = _evtchn;
        _evtchn = null;
        if (cancelInFlight)
        {
            CancelInFlight(port: 0);
            DrainForeignCompletionsNow();
        }
        evtchn.Dispose();
        _urbMapping?.Dispose();
        _connMapping?.Dispose();
        _urbMapping = null;
        _connMapping = null;
        _urbRing = default;
        _connRing = default;
        _pendingConnEvents.Clear();
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
        p.HighSpeed = null;
        if (device.Speed >= UsbSpeed.Super && wireSpeed == Usbif.Usbif.USBIF_SPEED_HIGH)
        {
            p.HighSpeed = HighSpeedDescriptorSet.Create(device.Descriptors.Span);
            if (p.HighSpeed is null)
            {
                _logger.SuperSpeedDescriptorsUnreadable(Frontend.Value, DevId, port, device.BusId, device.Descriptors.Length);
            }
        }
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
        p.HighSpeed = null;
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

    public void OnEvent(uint events)
    {
        if (_evtchn is null)
        {
            return;
        }
        _evtchn.ConsumePending();
        _stats.Kicks++;
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

    /// <summary>End of a loop turn in which devices completed URBs: their answers go to the guest together.</summary>
    public void Flush() => Contained(static c => c.PushResponses());

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
        if (_urbRing.HasUnconsumedRequests())
        {
            _lastRequest = _loop.Now;
        }
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
        SaveSnapshot();
        if ((_urbRing.IsAttached && _urbRing.SharedResponseProd != _urbRing.RspProdPvt)
            || (_connRing.IsAttached && _connRing.SharedResponseProd != _connRing.RspProdPvt))
        {
            _stats.Pushes++;
            if (!_suspended)
            {
                _loop.KeepHot(this);
            }
        }
        bool notify = _urbRing.IsAttached && _urbRing.PushResponsesAndCheckNotify();
        notify |= _connRing.IsAttached && _connRing.PushResponsesAndCheckNotify();
        if (notify)
        {
            _stats.Notifies++;
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

        /// <summary>A SuperSpeed device's descriptors as the guest reads them (it sees a high-speed device); null for the others.</summary>
        public HighSpeedDescriptorSet? HighSpeed { get; set; }

        /// <summary>Address the guest gave the device with SET_ADDRESS (0 = default address).</summary>
        public int Address { get; set; }

        /// <summary>The speed of the last conn event queued for this port: what the guest will believe once the queue drains.</summary>
        public byte QueuedSpeed { get; set; }

        /// <summary>The speed of the last conn event put on the ring: what the guest has been told.</summary>
        public byte AnnouncedSpeed { get; set; }
    }
}
