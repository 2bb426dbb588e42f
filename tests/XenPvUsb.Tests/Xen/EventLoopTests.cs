using System.Diagnostics;
using XenPvUsb.Interop.Linux;
using XenPvUsb.Xen;

namespace XenPvUsb.Tests.Xen;

[TestFixture]
public sealed class EventLoopTests
{
    private sealed class ThrowingHandler : IEventHandler, IFaultContained
    {
        public int Events;
        public Exception? Fault;

        public void OnEvent(uint events)
        {
            Events++;
            throw new InvalidOperationException("injected");
        }

        public void OnFault(Exception exception) => Fault = exception;
    }

    private sealed class ThrowingPollable : IBusyPollable, IFaultContained
    {
        public Exception? Fault;

        public bool Poll() => throw new InvalidOperationException("injected poll");

        public bool Arm() => false;

        public void OnFault(Exception exception) => Fault = exception;
    }

    [Test]
    public async Task ThrowingHandler_IsStoppedAndTold_TheLoopGoesOn()
    {
        using var loop = new EventLoop(busyPollMicroseconds: 0);
        int fd = EventFd.Create();
        try
        {
            var handler = new ThrowingHandler();
            loop.Register(fd, handler);
            EventFd.Signal(fd);
            await Task.Delay(50);
            Assert.That(await loop.InvokeAsync(() => handler.Fault), Is.InstanceOf<InvalidOperationException>());
            // Level-triggered and still readable: had the loop kept it, it would have fired again and again.
            Assert.That(handler.Events, Is.EqualTo(1));
            Assert.That(loop.Completion.IsCompleted, Is.False);
        }
        finally
        {
            loop.Dispose();
            EventFd.Close(fd);
        }
    }

    [Test]
    public async Task Flush_RunsOncePerTurn_AfterEveryHandlerOfTheTurn()
    {
        using var loop = new EventLoop(busyPollMicroseconds: 0);
        var flush = new CountingFlush();
        int a = EventFd.Create(), b = EventFd.Create();
        try
        {
            var order = new List<string>();
            var ha = new AskingHandler(loop, flush, order, "a", a);
            var hb = new AskingHandler(loop, flush, order, "b", b);
            flush.Order = order;
            loop.Register(a, ha);
            loop.Register(b, hb);
            // Both ready before the loop looks: one turn serves both, then flushes once.
            await loop.InvokeAsync(() =>
            {
                EventFd.Signal(a);
                EventFd.Signal(b);
            });
            for (int i = 0; i < 100 && await loop.InvokeAsync(() => flush.Count) == 0; i++)
            {
                await Task.Delay(10);
            }
            List<string> seen = await loop.InvokeAsync(() => order.ToList());
            Assert.That(seen.Count(x => x == "flush"), Is.EqualTo(1), string.Join(",", seen));
            Assert.That(seen[^1], Is.EqualTo("flush"), "after the handlers");
            Assert.That(seen.Take(seen.Count - 1), Is.EquivalentTo(new[] { "a", "b" }));
        }
        finally
        {
            EventFd.Close(a);
            EventFd.Close(b);
        }
    }

    private sealed class CountingFlush : IFlushable
    {
        public int Count;
        public List<string>? Order;

        public void Flush()
        {
            Count++;
            Order?.Add("flush");
        }
    }

    private sealed class AskingHandler(EventLoop loop, IFlushable flush, List<string> order, string name, int fd) : IEventHandler
    {
        public void OnEvent(uint events)
        {
            EventFd.Drain(fd);
            order.Add(name);
            loop.RequestFlush(flush);
        }
    }

    [Test]
    public async Task ThrowingPostedWork_DoesNotStopTheLoop()
    {
        using var loop = new EventLoop(busyPollMicroseconds: 0);
        loop.Post(() => throw new InvalidOperationException("injected"));
        Assert.That(await loop.InvokeAsync(() => 42).WaitAsync(TimeSpan.FromSeconds(5)), Is.EqualTo(42));
    }

    [Test]
    public async Task ThrowingPolledRing_IsStoppedAndTold()
    {
        using var loop = new EventLoop(busyPollMicroseconds: 0);
        var ring = new ThrowingPollable();
        await loop.InvokeAsync(() => loop.RequestPoll(ring));
        await Task.Delay(20);
        Assert.That(await loop.InvokeAsync(() => ring.Fault), Is.InstanceOf<InvalidOperationException>());
        Assert.That(loop.Completion.IsCompleted, Is.False);
    }

    [Test]
    public async Task Heartbeat_BeatsOnTheLoopThreadWhileIdle()
    {
        int beats = 0;
        bool onLoop = true;
        EventLoop? loopRef = null;
        using var loop = new EventLoop(null, new EventLoopOptions
        {
            BusyPollMicroseconds = 0,
            HeartbeatInterval = TimeSpan.FromMilliseconds(20),
            Heartbeat = () =>
            {
                onLoop &= loopRef?.IsLoopThread ?? true;
                Interlocked.Increment(ref beats);
            },
        });
        loopRef = loop;
        await Task.Delay(300);
        Assert.That(Volatile.Read(ref beats), Is.GreaterThanOrEqualTo(3), "an idle loop still wakes to say it is alive");
        Assert.That(onLoop, Is.True);
    }

    [Test]
    public async Task RequestPoll_ComesBackAfterTheReadyFdsWereServed()
    {
        using var loop = new EventLoop(busyPollMicroseconds: 0);
        var order = new List<string>();
        var ring = new CountingPollable(order, rounds: 3, loop);
        await loop.InvokeAsync(() => loop.RequestPoll(ring));
        await Task.Delay(50);
        List<string> seen = await loop.InvokeAsync(() => order.ToList());
        Assert.That(seen, Is.EqualTo(new[] { "poll", "posted", "poll", "poll" }), "work posted during a pass runs before the ring's next pass");
    }

    [Test]
    public async Task AnAnswer_KeepsTheRingPolled_ForAWholeWindowFromIt()
    {
        const int windowUs = 1_000_000;
        using var loop = new EventLoop(busyPollMicroseconds: windowUs);
        var ring = new ArmRecorder();
        long markedAt = await loop.InvokeAsync(() =>
        {
            Assert.That(loop.TryMarkHot(ring), Is.True);
            return Stopwatch.GetTimestamp();
        });
        // A while later (within the window) the ring answers its guest: the window starts again from the answer.
        await Task.Delay(300);
        long answeredAt = await loop.InvokeAsync(() =>
        {
            loop.KeepHot(ring);
            return Stopwatch.GetTimestamp();
        });
        long armedAt = await ring.Armed.Task.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.That(Stopwatch.GetElapsedTime(answeredAt, armedAt).TotalMicroseconds, Is.GreaterThanOrEqualTo(windowUs),
            "armed (the guest asked for events again) a whole window after the answer, not after the request");
        Assert.That(Stopwatch.GetElapsedTime(markedAt, armedAt), Is.GreaterThan(Stopwatch.GetElapsedTime(markedAt, answeredAt)));
        Assert.That(ring.Arms, Is.EqualTo(1), "and once: then it sleeps on its event channel");

        // Kept hot while not hot (the ring had armed): polled again, armed again after the window.
        ring.Armed = new TaskCompletionSource<long>(TaskCreationOptions.RunContinuationsAsynchronously);
        await loop.InvokeAsync(() => loop.KeepHot(ring));
        await ring.Armed.Task.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.That(ring.Arms, Is.EqualTo(2));
    }

    [Test]
    public async Task KeepHot_WithoutBusyPolling_DoesNothing()
    {
        using var loop = new EventLoop(busyPollMicroseconds: 0);
        var ring = new ArmRecorder();
        await loop.InvokeAsync(() => loop.KeepHot(ring));
        await Task.Delay(50);
        Assert.That(ring.Polls, Is.Zero);
        Assert.That(ring.Arms, Is.Zero);
    }

    private sealed class ArmRecorder : IBusyPollable
    {
        public volatile int Polls;
        public volatile int Arms;

        public TaskCompletionSource<long> Armed { get; set; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public bool Poll()
        {
            Polls++;
            return false;
        }

        public bool Arm()
        {
            Arms++;
            Armed.TrySetResult(Stopwatch.GetTimestamp());
            return false;
        }
    }

    private sealed class CountingPollable(List<string> order, int rounds, EventLoop loop) : IBusyPollable
    {
        private readonly int _rounds = rounds;
        private int _left = rounds;

        public bool Poll()
        {
            order.Add("poll");
            if (_left == _rounds)
            {
                loop.Post(() => order.Add("posted"));
            }
            if (--_left > 0)
            {
                loop.RequestPoll(this);
            }
            return true;
        }

        public bool Arm() => false;
    }
}
