using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using Microsoft.Extensions.Logging;
using XenPvUsb.Logging;

namespace XenPvUsb.Usb.Usbfs;

/// <summary>One piece of blocking usbfs work, run in order by a <see cref="UsbfsWorker"/>.</summary>
internal interface IUsbfsWork
{
    /// <summary>Runs on the worker thread; may block. Exceptions are logged and do not stop the worker.</summary>
    void Run(UsbfsWorker worker);
}

/// <summary>
/// The thread that makes one device's ioctls that can block (SETCONFIGURATION, SETINTERFACE,
/// CLEAR_HALT, RESET, DISCARDURB, which waits in usb_kill_urb for the host controller, and the
/// hand-back: RELEASE_PORT, RELEASEINTERFACE, USBDEVFS_CONNECT, which runs a driver's probe, close).
/// One queue per device, so a hung ioctl stalls only that device's queue: never the event loop, never
/// another device. A dedicated thread rather than the thread pool, whose workers a hung ioctl would
/// take away from everyone else; it sleeps on a semaphore when idle and ends after its last item.
/// </summary>
/// <remarks>
/// Items call <see cref="Step"/> before each blocking call. A step still running after the slow
/// threshold is logged once ("has not returned"), and one that returns late is logged with its time.
/// Lock: <c>_lock</c> guards the queue and the current step; nothing is called while it is held.
/// </remarks>
[SuppressMessage("Reliability", "CA1001", Justification = "The thread disposes its timer and semaphore when it ends, after its last item.")]
internal sealed class UsbfsWorker
{
    public static readonly TimeSpan DefaultSlowThreshold = TimeSpan.FromSeconds(1);

    private readonly Lock _lock = new();
    private readonly Queue<IUsbfsWork> _queue = new();
    private readonly SemaphoreSlim _ready = new(0);
    private readonly TaskCompletionSource _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly ILogger _logger;
    private readonly Thread _thread;
    private readonly Timer _slowTimer;
    private readonly TimeSpan _slowThreshold;
    private bool _closed;
    private string? _step;
    private int _stepArgument;
    private long _stepStarted;
    private bool _stepReported;

    public UsbfsWorker(string busId, ILogger logger, TimeSpan slowThreshold = default)
    {
        BusId = busId;
        _logger = logger;
        _slowThreshold = slowThreshold > TimeSpan.Zero ? slowThreshold : DefaultSlowThreshold;
        _slowTimer = new Timer(static s => ((UsbfsWorker)s!).OnSlowTimer(), this, Timeout.Infinite, Timeout.Infinite);
        // Small stacks: these threads only make ioctls.
        _thread = new Thread(Run, maxStackSize: 512 * 1024) { IsBackground = true, Name = $"usbfs {busId}" };
        _thread.Start();
    }

    public string BusId { get; }

    /// <summary>Completes when the thread has run its last item and ended.</summary>
    public Task Completion => _completion.Task;

    public bool IsWorkerThread => Environment.CurrentManagedThreadId == _thread.ManagedThreadId;

    /// <summary>Queues <paramref name="work"/> after everything queued before it. False once <see cref="PostLast"/> was called.</summary>
    public bool Post(IUsbfsWork work) => Enqueue(work, last: false);

    /// <summary>Queues the final item: nothing after it is accepted, and the thread ends once it has run.</summary>
    public bool PostLast(IUsbfsWork work) => Enqueue(work, last: true);

    /// <summary>Worker thread: the blocking call about to be made, for the slow-operation log. Ends the previous step.</summary>
    public void Step(string operation, int argument = 0)
    {
        Debug.Assert(IsWorkerThread, "steps are taken on the worker thread");
        EndStep();
        lock (_lock)
        {
            _step = operation;
            _stepArgument = argument;
            _stepStarted = Stopwatch.GetTimestamp();
            _stepReported = false;
        }
        _slowTimer.Change(_slowThreshold, Timeout.InfiniteTimeSpan);
    }

    private bool Enqueue(IUsbfsWork work, bool last)
    {
        lock (_lock)
        {
            if (_closed)
            {
                return false;
            }
            _queue.Enqueue(work);
            _closed = last;
        }
        _ready.Release();
        return true;
    }

    private void Run()
    {
        while (true)
        {
            _ready.Wait();
            IUsbfsWork work;
            bool last;
            lock (_lock)
            {
                work = _queue.Dequeue();
                last = _closed && _queue.Count == 0;
            }
            try
            {
                work.Run(this);
            }
            catch (Exception e)
            {
                _logger.UsbfsWorkFailed(e, BusId);
            }
            EndStep();
            if (last)
            {
                break;
            }
        }
        _slowTimer.Dispose();
        _ready.Dispose();
        _completion.TrySetResult();
    }

    private void EndStep()
    {
        string? step;
        int argument;
        long started;
        bool reported;
        lock (_lock)
        {
            step = _step;
            argument = _stepArgument;
            started = _stepStarted;
            reported = _stepReported;
            _step = null;
        }
        if (step is null)
        {
            return;
        }
        _slowTimer.Change(Timeout.Infinite, Timeout.Infinite);
        TimeSpan elapsed = Stopwatch.GetElapsedTime(started);
        if (elapsed >= _slowThreshold)
        {
            _logger.UsbfsSlowOperation(BusId, step, argument, (long)elapsed.TotalMilliseconds, reported);
        }
    }

    private void OnSlowTimer()
    {
        string? step;
        int argument;
        long started;
        lock (_lock)
        {
            if (_step is null || _stepReported)
            {
                return;
            }
            _stepReported = true;
            step = _step;
            argument = _stepArgument;
            started = _stepStarted;
        }
        _logger.UsbfsOperationStuck(BusId, step, argument, (long)Stopwatch.GetElapsedTime(started).TotalMilliseconds);
    }
}
