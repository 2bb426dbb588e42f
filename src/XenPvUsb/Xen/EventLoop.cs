using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Tmds.Linux;
using XenPvUsb.Interop.Linux;
using XenPvUsb.Logging;

namespace XenPvUsb.Xen;

/// <summary>
/// A ring the loop keeps polling for a short while after it had work, instead of re-arming its
/// notification and sleeping: a guest streaming URBs then needs no event channel kick per URB.
/// </summary>
public interface IBusyPollable
{
    /// <summary>Processes whatever is new. Returns true if there was any.</summary>
    bool Poll();

    /// <summary>Re-arms notifications before the loop sleeps. Returns true if work raced in (keep polling).</summary>
    bool Arm();
}

/// <summary>Work the loop runs once at the end of a turn, however many times it was asked for during it (<see cref="EventLoop.RequestFlush"/>).</summary>
public interface IFlushable
{
    void Flush();
}

/// <summary>Something with a file descriptor the event loop waits on.</summary>
public interface IEventHandler
{
    /// <summary>Runs on the loop thread when the fd is ready (EPOLL* bits in <paramref name="events"/>).</summary>
    void OnEvent(uint events);
}

/// <summary>
/// Work the loop runs (a handler, a polled ring) whose exceptions must stop only that work. When
/// <see cref="IEventHandler.OnEvent"/>, <see cref="IBusyPollable.Poll"/> or <see cref="IBusyPollable.Arm"/>
/// throws, the loop stops waiting on that handler's fd, stops polling it, and calls <see cref="OnFault"/>.
/// </summary>
public interface IFaultContained
{
    /// <summary>Loop thread: this object's own work threw. Stop this one thing; never throw from here.</summary>
    void OnFault(Exception exception);
}

/// <summary>How an <see cref="EventLoop"/> reports that it is alive, and what it does when it cannot go on.</summary>
public sealed class EventLoopOptions
{
    /// <summary>How long rings stay polled after their last request or answer; 0 disables busy polling.</summary>
    public int BusyPollMicroseconds { get; init; } = EventLoop.DefaultBusyPollMicroseconds;

    /// <summary>Called on the loop thread about every <see cref="HeartbeatInterval"/> (systemd's WATCHDOG=1).</summary>
    public Action? Heartbeat { get; init; }

    public TimeSpan HeartbeatInterval { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// Called on the loop thread when the loop itself fails (not one handler): nothing is served any
    /// more. The daemon exits there and then, so systemd restarts it; no zombie keeps the devices.
    /// </summary>
    public Action<Exception>? OnFatal { get; init; }
}

/// <summary>
/// The one event thread (style.md point 11): epoll over event-channel fds, usbfs fds and a wake-up
/// eventfd for work posted from other threads. Handlers run on this thread; all controller state is
/// touched only here, so the data path needs no locks. Handing each event to the thread pool was
/// considered and rejected: the hop costs more than the work of a URB. Never sleep-polls.
/// An exception from one handler, polled ring or posted action stops only that one (see
/// <see cref="IFaultContained"/>); only a failure of the loop itself is fatal (<see cref="EventLoopOptions.OnFatal"/>,
/// then <see cref="Completion"/> faults). The loop wakes at least every heartbeat interval to say it is alive.
/// </summary>
public sealed unsafe class EventLoop : IDisposable
{
    public const uint EpollIn = 0x001;
    public const uint EpollOut = 0x004;
    public const uint EpollErr = 0x008;
    public const uint EpollHup = 0x010;

    /// <summary>Default busy-poll window: long enough to catch a guest's next URB, short enough to cost little when idle.</summary>
    public const int DefaultBusyPollMicroseconds = 50;

    private const long WakeId = 0;

    private readonly int _epfd;
    private readonly int _wakeFd;
    private readonly ConcurrentDictionary<long, (IEventHandler Handler, int Fd)> _handlers = new();
    private readonly ConcurrentQueue<Action> _posted = new();
    private readonly TaskCompletionSource _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly ILogger _logger;
    private readonly Thread _thread;
    private readonly List<IBusyPollable> _hot = new();
    private readonly List<IBusyPollable> _ready = new();
    private readonly List<IBusyPollable> _readyNow = new();
    private readonly List<IFlushable> _flush = new();
    private readonly List<IFlushable> _flushNow = new();
    private readonly long _busyPollTicks;
    private readonly Action? _heartbeat;
    private readonly long _heartbeatTicks;
    private readonly int _heartbeatTimeoutMs;
    private readonly Action<Exception>? _onFatal;
    private long _lastHeartbeat;
    private long _lastHotWork;
    private long _now;
    private long _nextId;
    private volatile bool _stopping;
    private int _wakePending;

    /// <param name="busyPollMicroseconds">How long rings stay polled after their last request or answer; 0 disables busy polling.</param>
    public EventLoop(ILogger? logger = null, int busyPollMicroseconds = DefaultBusyPollMicroseconds)
        : this(logger, new EventLoopOptions { BusyPollMicroseconds = busyPollMicroseconds })
    {
    }

    public EventLoop(ILogger? logger, EventLoopOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        _logger = logger ?? NullLogger.Instance;
        _busyPollTicks = options.BusyPollMicroseconds * System.Diagnostics.Stopwatch.Frequency / 1_000_000;
        _heartbeat = options.Heartbeat;
        _onFatal = options.OnFatal;
        _heartbeatTicks = (long)(options.HeartbeatInterval.TotalSeconds * System.Diagnostics.Stopwatch.Frequency);
        _heartbeatTimeoutMs = _heartbeat is null ? -1 : (int)Math.Clamp(options.HeartbeatInterval.TotalMilliseconds, 1, int.MaxValue);
        _epfd = LibC.epoll_create1(LibC.EPOLL_CLOEXEC);
        if (_epfd < 0)
        {
            throw new IOException($"epoll_create1 failed: errno {LibC.errno}");
        }
        _wakeFd = EventFd.Create();
        Add(_wakeFd, WakeId, EpollIn);
        _thread = new Thread(Run) { IsBackground = true, Name = "xenpvusb-events" };
        _thread.Start();
    }

    /// <summary>Completes when the loop stops; faults if a handler threw.</summary>
    public Task Completion => _completion.Task;

    public bool IsLoopThread => Environment.CurrentManagedThreadId == _thread.ManagedThreadId;

    /// <summary>
    /// Loop thread only: the loop's clock, in <see cref="System.Diagnostics.Stopwatch"/> ticks, read once a turn
    /// (when epoll_wait returns). Handlers time what they do against it instead of reading the clock
    /// themselves: in a PV dom0 without a stable TSC clock_gettime is a system call (39 µs in the lab).
    /// </summary>
    public long Now => _now;

    /// <summary>Loop thread only: keep polling <paramref name="pollable"/> (it just had work) instead of arming it.</summary>
    public bool TryMarkHot(IBusyPollable pollable)
    {
        if (_busyPollTicks == 0)
        {
            return false;
        }
        if (!_hot.Contains(pollable))
        {
            _hot.Add(pollable);
            _lastHotWork = _now;
        }
        return true;
    }

    /// <summary>
    /// Loop thread only: <paramref name="pollable"/> just answered its guest, whose next request most often
    /// follows an answer: keep polling it (no event needed from the guest) for the window from now.
    /// </summary>
    public void KeepHot(IBusyPollable pollable)
    {
        if (_busyPollTicks == 0)
        {
            return;
        }
        if (!_hot.Contains(pollable))
        {
            _hot.Add(pollable);
        }
        _lastHotWork = _now;
    }

    /// <summary>Loop thread only: stop polling (the ring went away).</summary>
    public void RemoveHot(IBusyPollable pollable)
    {
        _hot.Remove(pollable);
        _ready.Remove(pollable);
    }

    /// <summary>
    /// Loop thread only: <paramref name="pollable"/> stopped at its work budget with work left; poll it
    /// again once every fd that is ready now has been served (so one ring cannot monopolise the loop).
    /// </summary>
    public void RequestPoll(IBusyPollable pollable)
    {
        if (!_ready.Contains(pollable))
        {
            _ready.Add(pollable);
        }
    }

    /// <summary>
    /// Loop thread only: call <paramref name="flushable"/>'s <see cref="IFlushable.Flush"/> once, after every handler that is
    /// ready in this turn of the loop has run (several device completions in one turn: one response push, one notification).
    /// </summary>
    public void RequestFlush(IFlushable flushable)
    {
        if (!_flush.Contains(flushable))
        {
            _flush.Add(flushable);
        }
    }

    /// <summary>Starts waiting on <paramref name="fd"/>. Returns a registration id for <see cref="Unregister"/>.</summary>
    public long Register(int fd, IEventHandler handler, uint events = EpollIn)
    {
        long id = Interlocked.Increment(ref _nextId);
        _handlers[id] = (handler, fd);
        try
        {
            Add(fd, id, events);
        }
        catch
        {
            _handlers.TryRemove(id, out _);
            throw;
        }
        return id;
    }

    /// <summary>Stops waiting on an fd. Safe to call from a handler; a pending event for it is dropped.</summary>
    public void Unregister(long id, int fd)
    {
        if (_handlers.TryRemove(id, out _))
        {
            epoll_event ev = default;
            LibC.epoll_ctl(_epfd, LibC.EPOLL_CTL_DEL, fd, &ev);
        }
    }

    /// <summary>Runs <paramref name="action"/> on the loop thread, after what is queued before it.</summary>
    public void Post(Action action)
    {
        _posted.Enqueue(action);
        if (Interlocked.Exchange(ref _wakePending, 1) == 0)
        {
            EventFd.Signal(_wakeFd);
        }
    }

    /// <summary>Runs <paramref name="func"/> on the loop thread and returns its result.</summary>
    public Task<T> InvokeAsync<T>(Func<T> func)
    {
        var tcs = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        Post(() =>
        {
            try
            {
                tcs.SetResult(func());
            }
            catch (Exception e)
            {
                tcs.SetException(e);
            }
        });
        return tcs.Task;
    }

    public Task InvokeAsync(Action action) => InvokeAsync<bool>(() =>
    {
        action();
        return true;
    });

    public void Dispose()
    {
        if (_stopping)
        {
            return;
        }
        _stopping = true;
        EventFd.Signal(_wakeFd);
        if (!IsLoopThread)
        {
            _thread.Join();
        }
        LibC.close(_epfd);
        EventFd.Close(_wakeFd);
    }

    private void Add(int fd, long id, uint events)
    {
        epoll_event ev = default;
        ev.events = (int)events;
        ev.data.u64 = (ulong)id;
        if (LibC.epoll_ctl(_epfd, LibC.EPOLL_CTL_ADD, fd, &ev) != 0)
        {
            throw new IOException($"epoll_ctl(ADD, fd {fd}) failed: errno {LibC.errno}");
        }
    }

    private void Run()
    {
        const int MaxEvents = 64;
        epoll_event* events = stackalloc epoll_event[MaxEvents];
        _lastHeartbeat = _now = System.Diagnostics.Stopwatch.GetTimestamp();
        try
        {
            while (!_stopping)
            {
                int timeout = _hot.Count > 0 || _ready.Count > 0 ? 0 : _heartbeatTimeoutMs;
                int n = LibC.epoll_wait(_epfd, events, MaxEvents, timeout);
                _now = System.Diagnostics.Stopwatch.GetTimestamp();
                if (n < 0)
                {
                    int errno = LibC.errno;
                    if (errno == LibC.EINTR)
                    {
                        continue;
                    }
                    throw new IOException($"epoll_wait failed: errno {errno}");
                }
                for (int i = 0; i < n && !_stopping; i++)
                {
                    long id = (long)events[i].data.u64;
                    if (id == WakeId)
                    {
                        EventFd.Drain(_wakeFd);
                        Volatile.Write(ref _wakePending, 0);
                        RunPosted();
                    }
                    else if (_handlers.TryGetValue(id, out (IEventHandler Handler, int Fd) entry))
                    {
                        Dispatch(id, entry.Handler, (uint)events[i].events);
                    }
                }
                RunFlushes();
                RunPosted();
                RunFlushes();
                if (_ready.Count > 0)
                {
                    PollReady();
                }
                if (_hot.Count > 0)
                {
                    PollHot();
                }
                Beat();
            }
            _completion.TrySetResult();
        }
        catch (Exception e)
        {
            _logger.EventLoopFailed(e);
            _completion.TrySetException(e);
            _onFatal?.Invoke(e);
        }
    }

    private void Dispatch(long id, IEventHandler handler, uint events)
    {
        try
        {
            handler.OnEvent(events);
        }
        catch (Exception e)
        {
            // Stop waiting on it first: a level-triggered fd that keeps failing must not spin the loop.
            if (_handlers.TryRemove(id, out (IEventHandler Handler, int Fd) entry))
            {
                epoll_event ev = default;
                LibC.epoll_ctl(_epfd, LibC.EPOLL_CTL_DEL, entry.Fd, &ev);
            }
            Fault(handler, e);
        }
    }

    /// <summary>One piece of work threw: log it and stop that work only.</summary>
    private void Fault(object work, Exception e)
    {
        _logger.HandlerFailed(work.GetType().Name, e);
        if (work is IBusyPollable pollable)
        {
            _hot.Remove(pollable);
            _ready.Remove(pollable);
        }
        if (work is IFaultContained contained)
        {
            try
            {
                contained.OnFault(e);
            }
            catch (Exception again)
            {
                _logger.HandlerFailed(work.GetType().Name, again);
            }
        }
    }

    private void Beat()
    {
        if (_heartbeat is null)
        {
            return;
        }
        long now = _now;
        if (now - _lastHeartbeat < _heartbeatTicks)
        {
            return;
        }
        _lastHeartbeat = now;
        try
        {
            _heartbeat();
        }
        catch (Exception e)
        {
            _logger.HandlerFailed("heartbeat", e);
        }
    }

    // Poll each ring that asked once; those that stop at their budget again ask again.
    private void PollReady() => RunEach(_ready, _readyNow, static p => p.Poll());

    /// <summary>Runs <paramref name="work"/> once for each of <paramref name="pending"/> (which may grow meanwhile, for the next time), each fault contained.</summary>
    private void RunEach<T>(List<T> pending, List<T> now, Action<T> work)
        where T : class
    {
        now.AddRange(pending);
        pending.Clear();
        foreach (T item in now)
        {
            try
            {
                work(item);
            }
            catch (Exception e)
            {
                Fault(item, e);
            }
        }
        now.Clear();
    }

    private void PollHot()
    {
        long now = _now;
        bool work = false;
        for (int i = 0; i < _hot.Count; i++)
        {
            IBusyPollable pollable = _hot[i];
            try
            {
                work |= pollable.Poll();
            }
            catch (Exception e)
            {
                Fault(pollable, e);
                i--;
            }
        }
        if (work)
        {
            _lastHotWork = now;
            return;
        }
        if (now - _lastHotWork < _busyPollTicks)
        {
            Thread.SpinWait(20);
            return;
        }
        for (int i = _hot.Count - 1; i >= 0; i--)
        {
            IBusyPollable pollable = _hot[i];
            bool again;
            try
            {
                again = pollable.Arm();
            }
            catch (Exception e)
            {
                Fault(pollable, e);
                continue;
            }
            if (!again && i < _hot.Count && _hot[i] == pollable)
            {
                _hot.RemoveAt(i);
            }
        }
    }

    private void RunFlushes()
    {
        if (_flush.Count > 0)
        {
            RunEach(_flush, _flushNow, static f => f.Flush());
        }
    }

    private void RunPosted()
    {
        while (_posted.TryDequeue(out Action? action))
        {
            try
            {
                action();
            }
            catch (Exception e)
            {
                // Work posted on behalf of a controller contains itself (its own try/catch); this one had no owner.
                _logger.HandlerFailed("posted work", e);
            }
        }
    }
}
