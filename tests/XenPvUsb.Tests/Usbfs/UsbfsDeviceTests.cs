using Microsoft.Extensions.Logging.Abstractions;
using XenPvUsb.Interop.Linux;
using XenPvUsb.Usb;
using XenPvUsb.Usb.Usbfs;
using XenPvUsb.Xen;
using static XenPvUsb.Interop.Linux.UsbDevFs;

namespace XenPvUsb.Tests.Usbfs;

/// <summary>The usbfs device logic against a fake ioctl layer, on a real event loop.</summary>
[TestFixture]
public sealed unsafe class UsbfsDeviceTests
{
    private const string BusId = "1-2";
    private const int EREMOTEIO = 121;
    private static readonly TimeSpan s_timeout = TimeSpan.FromSeconds(10);

    private FakeSysfs _sysfs = null!;
    private FakeUsbfsFile _file = null!;
    private EventLoop _loop = null!;
    private Recorder _owner = null!;
    private List<FakeUsbfsFile> _others = null!;

    [SetUp]
    public void SetUp()
    {
        _sysfs = new FakeSysfs();
        _sysfs.AddDevice(BusId, busNum: 1, devNum: 5);
        _sysfs.AddInterface(BusId, 1, 0, driver: "usb-storage");
        _sysfs.AddInterface(BusId, 1, 1);
        _file = new FakeUsbfsFile();
        _loop = new EventLoop(busyPollMicroseconds: 0);
        _owner = new Recorder(_loop);
        _others = new();
    }

    [TearDown]
    public void TearDown()
    {
        _loop.Dispose();
        _file.Dispose();
        foreach (FakeUsbfsFile f in _others)
        {
            f.Dispose();
        }
        _sysfs.Dispose();
    }

    private UsbfsDevice OpenDevice(ListLogger? log = null, TimeSpan slowThreshold = default)
    {
        var info = XenPvUsb.Host.UsbSysfs.Read(_sysfs.Root, BusId)!;
        return new UsbfsDevice(_file, _loop, _sysfs.Root, info, "/dev/bus/usb/001/005", log ?? (Microsoft.Extensions.Logging.ILogger)NullLogger.Instance, slowThreshold: slowThreshold);
    }

    /// <summary>A second device on the same loop, "1-3", with its own fake node.</summary>
    private (UsbfsDevice Device, FakeUsbfsFile File) OpenBystander()
    {
        _sysfs.AddDevice("1-3", busNum: 1, devNum: 6);
        _sysfs.AddInterface("1-3", 1, 0);
        var file = new FakeUsbfsFile();
        _others.Add(file);
        var info = XenPvUsb.Host.UsbSysfs.Read(_sysfs.Root, "1-3")!;
        return (new UsbfsDevice(file, _loop, _sysfs.Root, info, "/dev/bus/usb/001/006", NullLogger.Instance), file);
    }

    private T OnLoop<T>(Func<T> f) => _loop.InvokeAsync(f).WaitAsync(s_timeout).GetAwaiter().GetResult();

    private void OnLoop(Action a) => _loop.InvokeAsync(a).WaitAsync(s_timeout).GetAwaiter().GetResult();

    private static T Wait<T>(Task<T> task) => task.WaitAsync(s_timeout).GetAwaiter().GetResult();

    private static void Wait(Task task) => task.WaitAsync(s_timeout).GetAwaiter().GetResult();

    private static void WaitUntil(Func<bool> condition, string what)
    {
        DateTime deadline = DateTime.UtcNow + s_timeout;
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                Assert.Fail($"timed out waiting for {what}");
            }
            Thread.Sleep(1);
        }
    }

    private UsbTransfer NewTransfer(UsbTransferType type, byte endpoint, int length, bool shortNotOk = false) =>
        new(4096) { Type = type, Endpoint = endpoint, Length = length, ShortNotOk = shortNotOk, Owner = _owner };

    private void Reap(IEventHandler device) => OnLoop(() => device.OnEvent(EventLoop.EpollOut));

    /// <summary>Proves the loop turns while something blocks: another device's URB round-trips and a posted action runs.</summary>
    private void AssertLoopServesBystander(UsbfsDevice bystander, FakeUsbfsFile bystanderFile)
    {
        UsbTransfer t = NewTransfer(UsbTransferType.Bulk, 0x81, 512);
        OnLoop(() => bystander.Submit(t));
        bystanderFile.CompleteUrb(bystanderFile.PendingAt(0), 0, 512);
        Reap(bystander);
        Assert.That(_owner.Results, Does.Contain((t, 0, 512)), "the other device's URB completed");
        Assert.That(OnLoop(() => 42), Is.EqualTo(42), "a posted action ran");
    }

    [Test]
    public void Open_DetachesAndClaimsEveryInterface_ExceptFromAnotherUsbfsUser()
    {
        using UsbfsDevice device = OpenDevice();
        Assert.That(_file.Calls, Is.EqualTo(new[] { "disconnect_claim 0 2 usbfs", "disconnect_claim 1 2 usbfs" }));
        Assert.That(device.Speed, Is.EqualTo(UsbSpeed.High));
        Assert.That(device.Capabilities, Is.EqualTo(0xFDu));
    }

    [Test]
    public void Open_WithoutDisconnectClaim_DetachesOnlyBoundDriversThenClaims()
    {
        _file.DisconnectClaimUnsupported = true;
        using UsbfsDevice device = OpenDevice();
        Assert.That(_file.Calls, Is.EqualTo(new[]
        {
            "disconnect_claim 0 2 usbfs", "disconnect 0", "claim 0",
            "disconnect_claim 1 2 usbfs", "claim 1",
        }));
    }

    [Test]
    public void Open_InterfaceBusy_ThrowsWithErrno_AndHandsBackWhatItTook()
    {
        _file.ClaimResults[1] = -EBUSY;
        var e = Assert.Throws<UsbDeviceException>(() => OpenDevice());
        Assert.That(e!.Errno, Is.EqualTo(EBUSY));
        Assert.That(e.Message, Does.Contain("/dev/bus/usb/001/005").And.Contain("interface 1"));
        Assert.That(_file.Calls, Is.EqualTo(new[] { "disconnect_claim 0 2 usbfs", "disconnect_claim 1 2 usbfs", "release 0", "connect 0" }));
    }

    [Test]
    public void Open_SpeedFallsBackToSysfs_WhenGetSpeedIsUnsupported()
    {
        _file.Speed = -ENOTTY;
        using UsbfsDevice device = OpenDevice();
        Assert.That(device.Speed, Is.EqualTo(UsbSpeed.High));
    }

    [Test]
    public void Submit_FillsTheUrbFromTheTransfer()
    {
        using UsbfsDevice device = OpenDevice();
        UsbTransfer bulkIn = NewTransfer(UsbTransferType.Bulk, 0x81, 512, shortNotOk: true);
        UsbTransfer bulkOut = NewTransfer(UsbTransferType.Bulk, 0x02, 31, shortNotOk: true);
        UsbTransfer control = NewTransfer(UsbTransferType.Control, 0x80, 8 + 18, shortNotOk: true);
        OnLoop(() =>
        {
            device.Submit(bulkIn);
            device.Submit(bulkOut);
            device.Submit(control);
        });

        Assert.That(_file.PendingCount, Is.EqualTo(3));
        usbdevfs_urb* a = _file.PendingAt(0);
        usbdevfs_urb* b = _file.PendingAt(1);
        usbdevfs_urb* c = _file.PendingAt(2);
        Assert.Multiple(() =>
        {
            Assert.That(a->type, Is.EqualTo(USBDEVFS_URB_TYPE_BULK));
            Assert.That(a->endpoint, Is.EqualTo(0x81));
            Assert.That(a->flags, Is.EqualTo(USBDEVFS_URB_SHORT_NOT_OK), "SHORT_NOT_OK on IN bulk");
            Assert.That(a->buffer_length, Is.EqualTo(512));
            Assert.That(a->signr, Is.Zero);
            Assert.That((nint)a->usercontext, Is.Not.Zero);
            fixed (byte* p = bulkIn.Buffer)
            {
                Assert.That((nint)a->buffer, Is.EqualTo((nint)p), "the pinned transfer buffer itself, no copy");
            }
            Assert.That(b->flags, Is.Zero, "no SHORT_NOT_OK on OUT");
            Assert.That(c->type, Is.EqualTo(USBDEVFS_URB_TYPE_CONTROL));
            Assert.That(c->flags, Is.Zero, "no SHORT_NOT_OK on control");
            Assert.That(c->buffer_length, Is.EqualTo(26), "SETUP + data stage");
            Assert.That(device.PendingCount, Is.EqualTo(3));
        });
    }

    [Test]
    public void Reap_CompletesWithStatusAndDataStageLength()
    {
        using UsbfsDevice device = OpenDevice();
        UsbTransfer control = NewTransfer(UsbTransferType.Control, 0x80, 8 + 18);
        UsbTransfer bulk = NewTransfer(UsbTransferType.Bulk, 0x81, 512, shortNotOk: true);
        OnLoop(() =>
        {
            device.Submit(control);
            device.Submit(bulk);
        });
        _file.CompleteUrb(_file.PendingAt(0), 0, 18, [0x12, 0x01, 0x00, 0x02]);
        _file.CompleteUrb(_file.PendingAt(0), -EREMOTEIO, 13);
        Reap(device);

        Assert.That(_owner.Results, Is.EqualTo(new[] { (control, 0, 18), (bulk, -EREMOTEIO, 13) }));
        Assert.That(control.Data[..4].ToArray(), Is.EqualTo(new byte[] { 0x12, 0x01, 0x00, 0x02 }));
        Assert.That(_owner.AllOnLoopThread, Is.True);
        Assert.That(device.PendingCount, Is.Zero);
    }

    [Test]
    public void Resubmit_ReusesTheSameUrb()
    {
        using UsbfsDevice device = OpenDevice();
        UsbTransfer t = NewTransfer(UsbTransferType.Interrupt, 0x83, 8);
        OnLoop(() => device.Submit(t));
        nint first = (nint)_file.PendingAt(0);
        _file.CompleteUrb(_file.PendingAt(0), 0, 8);
        Reap(device);
        OnLoop(() => device.Submit(t));
        Assert.That((nint)_file.PendingAt(0), Is.EqualTo(first));
    }

    [Test]
    public void SubmitError_CompletesAtOnceWithMinusErrno()
    {
        using UsbfsDevice device = OpenDevice();
        UsbTransfer t = NewTransfer(UsbTransferType.Bulk, 0x85, 64);
        _file.NextSubmitResult = -ENOENT;
        OnLoop(() => device.Submit(t));
        Assert.That(_owner.Results, Is.EqualTo(new[] { (t, -ENOENT, 0) }));
        Assert.That(device.PendingCount, Is.Zero);
    }

    [Test]
    public void MalformedTransfer_CompletesWithEinval_WithoutSubmitting()
    {
        using UsbfsDevice device = OpenDevice();
        UsbTransfer shortSetup = NewTransfer(UsbTransferType.Control, 0x00, 4);
        UsbTransfer iso = NewTransfer(UsbTransferType.Isochronous, 0x81, 100);
        OnLoop(() =>
        {
            device.Submit(shortSetup);
            device.Submit(iso);
        });
        Assert.That(_owner.Results, Is.EqualTo(new[] { (shortSetup, -EINVAL, 0), (iso, -EINVAL, 0) }));
        Assert.That(_file.PendingCount, Is.Zero);
    }

    [Test]
    public void IsoPacketsLongerThanTheBuffer_CompleteWithEinval_WithoutSubmitting()
    {
        // usbfs takes the packets' lengths as the buffer's: the kernel would write past the daemon's memory.
        using UsbfsDevice device = OpenDevice();
        var t = new UsbTransfer(1024) { Type = UsbTransferType.Isochronous, Endpoint = 0x81, Length = 576, Owner = _owner, NumberOfPackets = 3 };
        for (int i = 0; i < 3; i++)
        {
            t.IsoPackets[i].Length = 400;
        }
        OnLoop(() => device.Submit(t));
        Assert.That(_owner.Results, Is.EqualTo(new[] { (t, -EINVAL, 0) }));
        Assert.That(_file.PendingCount, Is.Zero);
    }

    [Test]
    public void Iso_NeverAsksForShortNotOk()
    {
        using UsbfsDevice device = OpenDevice();
        UsbTransfer t = NewTransfer(UsbTransferType.Isochronous, 0x81, 192);
        t.ShortNotOk = true;
        t.NumberOfPackets = 1;
        t.IsoPackets[0].Length = 192;
        OnLoop(() => device.Submit(t));
        Assert.That(_file.PendingAt(0)->flags, Is.EqualTo(USBDEVFS_URB_ISO_ASAP));
    }

    [Test]
    public void Iso_LaysOutPacketDescriptors_AndCopiesResultsBack()
    {
        using UsbfsDevice device = OpenDevice();
        UsbTransfer t = NewTransfer(UsbTransferType.Isochronous, 0x81, 3 * 192);
        t.NumberOfPackets = 3;
        for (int i = 0; i < 3; i++)
        {
            t.IsoPackets[i].Length = 192;
        }
        OnLoop(() => device.Submit(t));
        usbdevfs_urb* urb = _file.PendingAt(0);
        usbdevfs_iso_packet_desc* desc = usbdevfs_urb.iso_frame_desc(urb);
        Assert.Multiple(() =>
        {
            Assert.That(urb->type, Is.EqualTo(USBDEVFS_URB_TYPE_ISO));
            Assert.That(urb->flags, Is.EqualTo(USBDEVFS_URB_ISO_ASAP));
            Assert.That(urb->number_of_packets, Is.EqualTo(3));
            Assert.That(desc[2].length, Is.EqualTo(192u));
        });
        desc[0].actual_length = 192;
        desc[1].actual_length = 10;
        desc[2].status = unchecked((uint)-18);
        _file.CompleteUrb(urb, 0, 202);
        urb->error_count = 1;
        Reap(device);
        Assert.Multiple(() =>
        {
            Assert.That(t.ActualLength, Is.EqualTo(202));
            Assert.That(t.ErrorCount, Is.EqualTo(1));
            Assert.That(t.IsoPackets[1].ActualLength, Is.EqualTo(10));
            Assert.That(t.IsoPackets[2].Status, Is.EqualTo(-18));
        });
    }

    [Test]
    public void Cancel_DiscardsOnTheWorker_AndTheReapDeliversEnoentOnce()
    {
        using UsbfsDevice device = OpenDevice();
        UsbTransfer t = NewTransfer(UsbTransferType.Bulk, 0x81, 512);
        OnLoop(() => device.Submit(t));
        OnLoop(() => device.Cancel(t));
        WaitUntil(() => _file.CompletedCount == 1, "the discard on the worker");
        Assert.That(_owner.Results, Is.Empty, "completion comes through the reap, not inline");
        Reap(device);
        OnLoop(() => device.Cancel(t));
        Assert.That(_owner.Results, Is.EqualTo(new[] { (t, -ENOENT, 0) }));
        Assert.That(_file.Calls.Count(c => c == "discard"), Is.EqualTo(1), "no discard once it completed");
    }

    [Test]
    public void Cancel_Twice_QueuesOneDiscard()
    {
        using UsbfsDevice device = OpenDevice();
        UsbTransfer t = NewTransfer(UsbTransferType.Bulk, 0x81, 512);
        using FakeGate gate = _file.Block("discard");
        OnLoop(() => device.Submit(t));
        OnLoop(() =>
        {
            device.Cancel(t);
            device.Cancel(t);
        });
        Assert.That(gate.WaitEntered(s_timeout), Is.True);
        gate.Release();
        WaitUntil(() => _file.CompletedCount == 1, "the discard");
        Assert.That(_file.Calls.Count(c => c == "discard"), Is.EqualTo(1));
    }

    [Test]
    public void Cancel_AfterItCompletedButBeforeReap_IsHarmless()
    {
        using UsbfsDevice device = OpenDevice();
        UsbTransfer t = NewTransfer(UsbTransferType.Bulk, 0x81, 512);
        OnLoop(() => device.Submit(t));
        _file.CompleteUrb(_file.PendingAt(0), 0, 100);
        OnLoop(() => device.Cancel(t)); // DISCARDURB -> EINVAL: already on the completed list
        WaitUntil(() => _file.Calls.Contains("discard"), "the discard");
        Reap(device);
        Assert.That(_owner.Results, Is.EqualTo(new[] { (t, 0, 100) }));
    }

    [Test]
    public void Discard_StillQueued_WhenTheUrbCompletesAndIsResubmitted_DoesNotKillTheNewSubmission()
    {
        using UsbfsDevice device = OpenDevice();
        UsbTransfer t = NewTransfer(UsbTransferType.Interrupt, 0x83, 8);
        OnLoop(() => device.Submit(t));
        nint first = (nint)_file.PendingAt(0);

        // The worker is busy elsewhere, so the discard waits in its queue.
        using FakeGate busy = _file.Block("setinterface");
        Task<int> op = OnLoop(() => device.SetInterfaceAsync(1, 1));
        Assert.That(busy.WaitEntered(s_timeout), Is.True);
        OnLoop(() => device.Cancel(t));

        _file.CompleteUrb((usbdevfs_urb*)first, 0, 8);
        Reap(device);
        OnLoop(() => device.Submit(t));
        nint second = (nint)_file.PendingAt(0);
        Assert.That(second, Is.Not.EqualTo(first), "a fresh usbdevfs_urb while the old address has a discard queued");
        Assert.That(device.RetiredUrbs, Is.EqualTo(1));

        busy.Release();
        Assert.That(Wait(op), Is.Zero);
        WaitUntil(() => device.RetiredUrbs == 0, "the discard to return and free the old URB");
        Assert.That(_file.PendingCount, Is.EqualTo(1), "the new submission was not killed");
        Assert.That((nint)_file.PendingAt(0), Is.EqualTo(second));
        Reap(device);
        Assert.That(_owner.Results, Is.EqualTo(new[] { (t, 0, 8) }), "one completion, with its own status");
    }

    [Test]
    public void Discard_Running_WhenTheUrbCompletesAndIsResubmitted_DoesNotKillTheNewSubmission()
    {
        using UsbfsDevice device = OpenDevice();
        UsbTransfer t = NewTransfer(UsbTransferType.Interrupt, 0x83, 8);
        _owner.OnCompleted = x =>
        {
            if (_owner.Results.Count == 1)
            {
                device.Submit(x); // the owner resubmits from the completion, as the controller does
            }
        };
        OnLoop(() => device.Submit(t));
        nint first = (nint)_file.PendingAt(0);
        // usb_kill_urb waiting for the host controller: the ioctl is made, and sits in the kernel.
        using FakeGate kill = _file.Block("discard");
        OnLoop(() => device.Cancel(t));
        Assert.That(kill.WaitEntered(s_timeout), Is.True);

        _file.CompleteUrb((usbdevfs_urb*)first, 0, 8);
        Reap(device);
        nint second = (nint)_file.PendingAt(0);
        Assert.That(second, Is.Not.EqualTo(first));

        kill.Release();
        WaitUntil(() => device.RetiredUrbs == 0, "the discard to return and free the old URB");
        Assert.That(_file.PendingCount, Is.EqualTo(1));
        Assert.That((nint)_file.PendingAt(0), Is.EqualTo(second), "the late discard named the old address and missed");
    }

    [Test]
    public void Discard_Blocked_LoopKeepsServingOtherDevices()
    {
        using UsbfsDevice device = OpenDevice();
        (UsbfsDevice bystander, FakeUsbfsFile bystanderFile) = OpenBystander();
        using (bystander)
        {
            UsbTransfer t = NewTransfer(UsbTransferType.Bulk, 0x81, 512);
            OnLoop(() => device.Submit(t));
            using FakeGate kill = _file.Block("discard");
            OnLoop(() => device.Cancel(t));
            Assert.That(kill.WaitEntered(s_timeout), Is.True);

            AssertLoopServesBystander(bystander, bystanderFile);

            kill.Release();
            WaitUntil(() => _file.CompletedCount == 1, "the discard");
            Reap(device);
            Assert.That(_owner.Results, Does.Contain((t, -ENOENT, 0)));
        }
    }

    [Test]
    public void SetConfiguration_Blocked_LoopKeepsServingOtherDevices_AndLaterOperationsQueue()
    {
        using UsbfsDevice device = OpenDevice();
        (UsbfsDevice bystander, FakeUsbfsFile bystanderFile) = OpenBystander();
        using (bystander)
        {
            using FakeGate gate = _file.Block("setconfig");
            Task<int> set = OnLoop(() => device.SetConfigurationAsync(1));
            Assert.That(gate.WaitEntered(s_timeout), Is.True);
            Task<int> clear = OnLoop(() => device.ClearHaltAsync(0x81));

            AssertLoopServesBystander(bystander, bystanderFile);
            Assert.That(set.IsCompleted, Is.False);
            Assert.That(clear.IsCompleted, Is.False, "one queue per device: the next operation waits its turn");

            gate.Release();
            Assert.That(Wait(set), Is.Zero);
            Assert.That(Wait(clear), Is.Zero);
            Assert.That(_file.Calls[^1], Is.EqualTo("clear_halt 0x81"));
        }
    }

    [Test]
    public void Operations_CompleteOffTheWorkerThread()
    {
        using UsbfsDevice device = OpenDevice();
        int? continuationThread = null;
        int loopThread = OnLoop(() => Environment.CurrentManagedThreadId);
        Task<int> op = OnLoop(() => device.ClearHaltAsync(0x02));
        Wait(op.ContinueWith(_ => continuationThread = Environment.CurrentManagedThreadId, TaskScheduler.Default));
        Assert.That(op.Result, Is.Zero);
        Assert.That(continuationThread, Is.Not.EqualTo(loopThread), "results are not posted to the loop: the caller does that");
    }

    [Test]
    public void SlowOperation_IsLoggedOnceWhileStuck_AndWithItsTimeWhenItReturns()
    {
        var log = new ListLogger();
        using UsbfsDevice device = OpenDevice(log, slowThreshold: TimeSpan.FromMilliseconds(50));
        using FakeGate gate = _file.Block("reset");
        Task<int> reset = OnLoop(device.ResetAsync);
        Assert.That(gate.WaitEntered(s_timeout), Is.True);
        WaitUntil(() => log.Snapshot().Any(m => m.Contains("has not returned", StringComparison.Ordinal)), "the stuck warning");
        Thread.Sleep(200);
        gate.Release();
        Assert.That(Wait(reset), Is.Zero);
        WaitUntil(() => log.Snapshot().Any(m => m.Contains("took", StringComparison.Ordinal)), "the time it took");
        Assert.That(log.Snapshot().Count(m => m.Contains("RESET(0) has not returned", StringComparison.Ordinal)), Is.EqualTo(1), "once");
    }

    [Test]
    public void Unplug_PollHup_ReapsWhatItCan_FailsTheRestWithEnodev_AndStopsWatching()
    {
        using UsbfsDevice device = OpenDevice();
        UsbTransfer a = NewTransfer(UsbTransferType.Bulk, 0x81, 512);
        UsbTransfer b = NewTransfer(UsbTransferType.Bulk, 0x02, 512);
        OnLoop(() =>
        {
            device.Submit(a);
            device.Submit(b);
        });
        _file.CompleteUrb(_file.PendingAt(0), 0, 512);
        _file.HangUp(); // b stays "lost" in the kernel's view
        Assert.That(_owner.WaitForCount(2, s_timeout), Is.True, "the real EPOLLHUP drives it");
        Assert.That(_owner.Results, Is.EqualTo(new[] { (a, 0, 512), (b, -ENODEV, 0) }));
        Assert.That(OnLoop(() => device.IsGone), Is.True);

        UsbTransfer c = NewTransfer(UsbTransferType.Bulk, 0x81, 512);
        OnLoop(() => device.Submit(c));
        Assert.That(_owner.Results[^1], Is.EqualTo((c, -ENODEV, 0)));
        Assert.That(Wait(OnLoop(() => device.SetInterfaceAsync(0, 1))), Is.EqualTo(-ENODEV));
    }

    [Test]
    public void Unplug_KilledUrbsKeepTheirReapedStatus()
    {
        using UsbfsDevice device = OpenDevice();
        UsbTransfer a = NewTransfer(UsbTransferType.Bulk, 0x81, 512);
        OnLoop(() => device.Submit(a));
        _file.Unplug(killStatus: -108);
        Assert.That(_owner.WaitForCount(1, s_timeout), Is.True);
        Assert.That(_owner.Results, Is.EqualTo(new[] { (a, -108, 0) }));
    }

    [Test]
    public void ReapEnodev_WithoutPollHup_MeansGone()
    {
        using UsbfsDevice device = OpenDevice();
        UsbTransfer a = NewTransfer(UsbTransferType.Bulk, 0x81, 512);
        OnLoop(() => device.Submit(a));
        _file.FailWithEnodev(); // REAPURBNDELAY answers ENODEV while the URB is still listed pending
        Reap(device);
        Assert.That(_owner.Results, Is.EqualTo(new[] { (a, -ENODEV, 0) }));
        Assert.That(OnLoop(() => device.IsGone), Is.True);
    }

    [Test]
    public void Dispose_FromAnotherThread_AbandonsAtOnce_ThenReleasesReconnectsAndCloses()
    {
        UsbfsDevice device = OpenDevice();
        UsbTransfer a = NewTransfer(UsbTransferType.Bulk, 0x81, 512);
        UsbTransfer b = NewTransfer(UsbTransferType.Interrupt, 0x83, 8);
        OnLoop(() =>
        {
            device.Submit(a);
            device.Submit(b);
        });
        _file.ClearCalls();

        Wait(Task.Run(device.Dispose));

        Assert.That(_owner.Results, Is.EqualTo(new[] { (a, -ENODEV, 0), (b, -ENODEV, 0) }), "completed before Dispose returned, as a device gone");
        Assert.That(_owner.AllOnLoopThread, Is.True);
        Wait(device.Released);
        // Both interfaces are offered to dom0's drivers: the one we took from usb-storage and the one that had none.
        Assert.That(_file.Calls, Is.EqualTo(new[] { "release 0", "release 1", "connect 0", "connect 1", "close" }), "no discard, no reap: release and close kill them");
        Assert.That(_file.Disposed, Is.True);
        device.Dispose();
        Assert.That(_file.Calls.Count(c => c == "close"), Is.EqualTo(1), "idempotent");
    }

    [Test]
    public void Dispose_NothingIsReapedAfterward_SoReusedBuffersAreNeverWritten()
    {
        UsbfsDevice device = OpenDevice();
        UsbTransfer t = NewTransfer(UsbTransferType.Bulk, 0x81, 512);
        OnLoop(() => device.Submit(t));
        usbdevfs_urb* urb = _file.PendingAt(0);
        using FakeGate hold = _file.Block("release 0");
        OnLoop(device.Dispose);
        Assert.That(_owner.Results, Is.EqualTo(new[] { (t, -ENODEV, 0) }));

        // The owner reuses the buffer at once; then the HC finishes the URB with data, and epoll says "writable".
        t.Buffer.AsSpan().Fill(0xAA);
        Assert.That(hold.WaitEntered(s_timeout), Is.True);
        _file.CompleteUrb(urb, 0, 4, [1, 2, 3, 4]);
        Reap(device);
        hold.Release();
        Wait(device.Released);

        Assert.That(_owner.Results, Has.Count.EqualTo(1), "no completion after Dispose");
        Assert.That(t.Buffer[..4], Is.All.EqualTo(0xAA), "no copy into the reused buffer");
        Assert.That(_file.CompletedCount, Is.EqualTo(1), "never reaped: close frees it in the kernel");
    }

    [Test]
    public void Teardown_Blocked_ReleasedWaitsForIt_WhileTheLoopGoesOn()
    {
        UsbfsDevice device = OpenDevice();
        (UsbfsDevice bystander, FakeUsbfsFile bystanderFile) = OpenBystander();
        using (bystander)
        {
            UsbTransfer t = NewTransfer(UsbTransferType.Bulk, 0x81, 512);
            OnLoop(() => device.Submit(t));
            // USBDEVFS_CONNECT runs the driver's probe, which can take long.
            using FakeGate probe = _file.Block("connect 0");
            OnLoop(device.Dispose);
            Assert.That(_owner.Results, Is.EqualTo(new[] { (t, -ENODEV, 0) }));
            Assert.That(probe.WaitEntered(s_timeout), Is.True);

            AssertLoopServesBystander(bystander, bystanderFile);
            Assert.That(device.Released.IsCompleted, Is.False);
            Assert.That(_file.Disposed, Is.False);

            probe.Release();
            Wait(device.Released);
            Assert.That(_file.Disposed, Is.True);
            Assert.That(_file.Calls[^1], Is.EqualTo("close"));
        }
    }

    [Test]
    public void Teardown_WaitsForOperationsQueuedBeforeIt()
    {
        UsbfsDevice device = OpenDevice();
        using FakeGate gate = _file.Block("setconfig");
        Task<int> set = OnLoop(() => device.SetConfigurationAsync(1));
        Assert.That(gate.WaitEntered(s_timeout), Is.True);
        Task<int> queued = OnLoop(() => device.SetInterfaceAsync(0, 1));
        OnLoop(device.Dispose);
        Assert.That(Wait(OnLoop(() => device.ResetAsync())), Is.EqualTo(-ENODEV), "after Dispose: at once");
        gate.Release();
        Assert.That(Wait(set), Is.Zero);
        Assert.That(Wait(queued), Is.EqualTo(-ENODEV), "queued before Dispose, run after it: not sent");
        Wait(device.Released);
        Assert.That(_file.Calls, Does.Not.Contain("setinterface 0 1"));
    }

    [TestCase(1, 2, false, TestName = "Dispose_ConnectBindsADriver_CountsItHandedBack")]
    [TestCase(0, 0, false, TestName = "Dispose_ConnectFindsNoDriver_IsNotAFailure")]
    [TestCase(-EBUSY, 0, false, TestName = "Dispose_ConnectFindsADriverBound_IsNotAFailure")]
    [TestCase(-ENODEV, 0, true, TestName = "Dispose_ConnectFails_WarnsWithErrno")]
    public void Dispose_ReportsWhatUsbdevfsConnectDid(int connectResult, int handedBack, bool warns)
    {
        var log = new ListLogger();
        UsbfsDevice device = OpenDevice(log);
        _file.ConnectResult = connectResult;

        device.Dispose();
        Wait(device.Released);

        Assert.That(log.Snapshot(), Does.Contain($"Information usb {BusId}: released ({handedBack} interfaces handed back to kernel drivers)"));
        Assert.That(log.Snapshot().Any(m => m.StartsWith("Warning ", StringComparison.Ordinal)), Is.EqualTo(warns));
        if (warns)
        {
            Assert.That(log.Snapshot(), Does.Contain($"Warning usb {BusId}: could not hand interface 0 back to its kernel driver: errno {ENODEV}"));
        }
    }

    [Test]
    public void Dispose_OfAnUnconfiguredDevice_SelectsItsFirstConfigurationForDom0()
    {
        UsbfsDevice device = OpenDevice();
        _sysfs.RemoveInterfaces(BusId);
        _sysfs.SetConfiguration(BusId, 0);
        _sysfs.SetFirstConfigurationValue(BusId, 3);
        _file.ClearCalls();
        device.Dispose();
        Wait(device.Released);
        Assert.That(_file.Calls, Is.EqualTo(new[] { "release 0", "release 1", "setconfig 3", "close" }));
    }

    [Test]
    public void Dispose_OnTheLoopThread_RunsInline()
    {
        UsbfsDevice device = OpenDevice();
        UsbTransfer a = NewTransfer(UsbTransferType.Bulk, 0x81, 512);
        OnLoop(() => device.Submit(a));
        OnLoop(device.Dispose);
        Assert.That(_owner.Results, Is.EqualTo(new[] { (a, -ENODEV, 0) }));
        Wait(device.Released);
        Assert.That(_file.Disposed, Is.True);
    }

    [Test]
    public void Dispose_AfterTheLoopStopped_StillCompletesEverything()
    {
        UsbfsDevice device = OpenDevice();
        UsbTransfer a = NewTransfer(UsbTransferType.Bulk, 0x81, 512);
        OnLoop(() => device.Submit(a));
        _loop.Dispose();
        device.Dispose();
        Assert.That(_owner.Results, Is.EqualTo(new[] { (a, -ENODEV, 0) }));
        Wait(device.Released);
    }

    [Test]
    public void Dispose_AfterUnplug_DoesNotTouchTheGoneDevice()
    {
        UsbfsDevice device = OpenDevice();
        UsbTransfer a = NewTransfer(UsbTransferType.Bulk, 0x81, 512);
        OnLoop(() => device.Submit(a));
        _file.Unplug();
        Assert.That(_owner.WaitForCount(1, s_timeout), Is.True);
        _file.ClearCalls();
        device.Dispose();
        Wait(device.Released);
        Assert.That(_file.Calls, Is.EqualTo(new[] { "close" }));
        Assert.That(_owner.Results, Has.Count.EqualTo(1));
    }

    [Test]
    public void SetConfiguration_ReleasesAll_Sets_AndClaimsTheNewConfigurationsInterfaces()
    {
        UsbfsDevice device = OpenDevice();
        _file.ClearCalls();
        _file.OnSetConfiguration = value =>
        {
            _sysfs.RemoveInterfaces(BusId);
            _sysfs.SetConfiguration(BusId, value);
            _sysfs.AddInterface(BusId, value, 0, driver: "cdc_acm");
            _sysfs.AddInterface(BusId, value, 2, driver: "cdc_acm");
        };
        int rc = Wait(OnLoop(() => device.SetConfigurationAsync(2)));
        Assert.That(rc, Is.Zero);
        Assert.That(_file.Calls, Is.EqualTo(new[] { "release 0", "release 1", "setconfig 2", "disconnect_claim 0 2 usbfs", "disconnect_claim 2 2 usbfs" }));

        _file.ClearCalls();
        device.Dispose();
        Wait(device.Released);
        Assert.That(_file.Calls, Is.EqualTo(new[] { "release 0", "release 2", "connect 0", "connect 2", "close" }));
    }

    [Test]
    public void Reset_ReleasesResetsAndClaimsAgain()
    {
        using UsbfsDevice device = OpenDevice();
        _file.ClearCalls();
        Assert.That(Wait(OnLoop(device.ResetAsync)), Is.Zero);
        Assert.That(_file.Calls, Is.EqualTo(new[] { "release 0", "release 1", "reset", "disconnect_claim 0 2 usbfs", "disconnect_claim 1 2 usbfs" }));
    }

    [Test]
    public void SetInterface_AndClearHalt_GoStraightToUsbfs()
    {
        using UsbfsDevice device = OpenDevice();
        _file.ClearCalls();
        Assert.That(Wait(OnLoop(() => device.SetInterfaceAsync(1, 2))), Is.Zero);
        Assert.That(Wait(OnLoop(() => device.ClearHaltAsync(0x81))), Is.Zero);
        Assert.That(_file.Calls, Is.EqualTo(new[] { "setinterface 1 2", "clear_halt 0x81" }));
    }

    [Test]
    public void CompletionCallback_MayResubmit()
    {
        using UsbfsDevice device = OpenDevice();
        UsbTransfer t = NewTransfer(UsbTransferType.Interrupt, 0x83, 8);
        _owner.OnCompleted = x =>
        {
            if (_owner.Results.Count < 3)
            {
                device.Submit(x);
            }
        };
        OnLoop(() => device.Submit(t));
        for (int i = 0; i < 3; i++)
        {
            _file.CompleteUrb(_file.PendingAt(0), 0, 8);
            Reap(device);
        }
        Assert.That(_owner.Results, Has.Count.EqualTo(3));
        Assert.That(device.PendingCount, Is.Zero);
    }

    /// <summary>Records (transfer, status, actual) per completion and whether each came on the loop thread.</summary>
    private sealed class Recorder(EventLoop loop) : IUsbTransferOwner
    {
        private readonly Lock _lock = new();
        private readonly List<(UsbTransfer, int, int)> _results = new();

        public bool AllOnLoopThread { get; private set; } = true;

        public Action<UsbTransfer>? OnCompleted { get; set; }

        public List<(UsbTransfer, int, int)> Results
        {
            get
            {
                lock (_lock)
                {
                    return [.. _results];
                }
            }
        }

        public void OnTransferCompleted(UsbTransfer transfer)
        {
            lock (_lock)
            {
                _results.Add((transfer, transfer.Status, transfer.ActualLength));
                AllOnLoopThread &= loop.IsLoopThread;
            }
            OnCompleted?.Invoke(transfer);
        }

        public bool WaitForCount(int count, TimeSpan timeout)
        {
            DateTime deadline = DateTime.UtcNow + timeout;
            while (DateTime.UtcNow < deadline)
            {
                if (Results.Count >= count)
                {
                    return true;
                }
                Thread.Sleep(1);
            }
            return false;
        }
    }
}
