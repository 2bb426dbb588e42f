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

/// <summary>Something with a file descriptor the event loop waits on.</summary>
public interface IEventHandler
{
    /// <summary>Runs on the loop thread when the fd is ready (EPOLL* bits in <paramref name="events"/>).</summary>
    void OnEvent(uint events);
}

/// <summary>
/// The one event thread (style.md point 11): epoll over event-channel fds, usbfs fds and a wake-up
/// eventfd for work posted from other threads. Handlers run on this thread; all controller state is
/// touched only here, so the data path needs no locks. Handing each event to the thread pool was
/// considered and rejected: the hop costs more than the work of a URB. Never sleep-polls.
/// An exception escaping a handler is fatal for the daemon (reported through <see cref="Completion"/>).
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
    private readonly ConcurrentDictionary<long, IEventHandler> _handlers = new();
    private readonly ConcurrentQueue<Action> _posted = new();
    private readonly TaskCompletionSource _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly ILogger _logger;
    private readonly Thread _thread;
    private readonly List<IBusyPollable> _hot = new();
    private readonly long _busyPollTicks;
    private long _lastHotWork;
    private long _nextId;
    private volatile bool _stopping;
    private int _wakePending;

    /// <param name="busyPollMicroseconds">How long rings stay polled after their last work; 0 disables busy polling.</param>
    public EventLoop(ILogger? logger = null, int busyPollMicroseconds = DefaultBusyPollMicroseconds)
    {
        _logger = logger ?? NullLogger.Instance;
        _busyPollTicks = busyPollMicroseconds * System.Diagnostics.Stopwatch.Frequency / 1_000_000;
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
            _lastHotWork = System.Diagnostics.Stopwatch.GetTimestamp();
        }
        return true;
    }

    /// <summary>Loop thread only: stop polling (the ring went away).</summary>
    public void RemoveHot(IBusyPollable pollable) => _hot.Remove(pollable);

    /// <summary>Starts waiting on <paramref name="fd"/>. Returns a registration id for <see cref="Unregister"/>.</summary>
    public long Register(int fd, IEventHandler handler, uint events = EpollIn)
    {
        long id = Interlocked.Increment(ref _nextId);
        _handlers[id] = handler;
        Add(fd, id, events);
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
        try
        {
            while (!_stopping)
            {
                int n = LibC.epoll_wait(_epfd, events, MaxEvents, _hot.Count > 0 ? 0 : -1);
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
                    else if (_handlers.TryGetValue(id, out IEventHandler? handler))
                    {
                        handler.OnEvent((uint)events[i].events);
                    }
                }
                RunPosted();
                if (_hot.Count > 0)
                {
                    PollHot();
                }
            }
            _completion.TrySetResult();
        }
        catch (Exception e)
        {
            _logger.EventLoopFailed(e);
            _completion.TrySetException(e);
        }
    }

    private void PollHot()
    {
        long now = System.Diagnostics.Stopwatch.GetTimestamp();
        bool work = false;
        for (int i = 0; i < _hot.Count; i++)
        {
            work |= _hot[i].Poll();
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
            if (!_hot[i].Arm())
            {
                _hot.RemoveAt(i);
            }
        }
    }

    private void RunPosted()
    {
        while (_posted.TryDequeue(out Action? action))
        {
            action();
        }
    }
}
