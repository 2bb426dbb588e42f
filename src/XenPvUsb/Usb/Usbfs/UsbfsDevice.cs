using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using XenPvUsb.Host;
using XenPvUsb.Interop.Linux;
using XenPvUsb.Logging;
using XenPvUsb.Xen;
using static XenPvUsb.Interop.Linux.UsbDevFs;

namespace XenPvUsb.Usb.Usbfs;

/// <summary>
/// A host USB device driven through usbfs (host-interfaces.md §1): its hub port claimed (no dom0 driver
/// may bind it), every interface of the active configuration claimed (kernel drivers detached),
/// transfers submitted as asynchronous URBs and reaped when the event loop sees the fd writable.
/// </summary>
/// <remarks>
/// Threads and what each owns:
/// - The constructor runs on the caller's thread (Open's, never the loop's: claiming detaches drivers).
/// - The event loop thread: Submit, Cancel, reaping, completions, the first half of Dispose; it alone
///   touches the URB entries, the pending count and the epoll registration. Nothing it does blocks: each
///   ioctl it makes (SUBMITURB, REAPURBNDELAY) returns at once.
/// - The device's <see cref="UsbfsWorker"/>: every ioctl that can block (SETCONFIGURATION, SETINTERFACE,
///   CLEAR_HALT, RESET, DISCARDURB) and the hand-back; it alone touches the claim bookkeeping
///   (<c>_claimed</c>, <c>_hadDriver</c>) after the constructor, and it owns the entries and native URBs once
///   Dispose handed them over with the teardown item.
/// Results of the operations come back as Task results (continuations run asynchronously, never on the worker).
///
/// Each <see cref="UsbTransfer"/> gets one native usbdevfs_urb (plus room for ISO descriptors when it
/// is first used for ISO), made the first time it is submitted and reused from then on: the kernel
/// identifies a URB by that address and writes the result into it at reap time, so it must not move
/// (§1.5). The URB's usercontext is the entry's index + 1, which finds the transfer again at reap.
/// DISCARDURB names a URB by that same address, and runs later on the worker: if the URB completes and its
/// transfer is submitted again before the discard ran, the entry gets a fresh usbdevfs_urb so the late
/// discard cannot kill the new submission, and the old one is freed once the discard returned.
///
/// Dispose abandons the device: every pending transfer completes at once with -ENODEV (as for a device
/// that went away), the fd leaves epoll and is never reaped again (a reap would copy_to_user into buffers
/// the owner may already reuse); then the worker releases the port claim, releases every interface (which
/// kills their URBs in the kernel), hands back to their drivers the interfaces that had one (the claim
/// must be gone first, or the probe is refused), closes the fd (which kills what is left without copying
/// to user memory), frees the native URBs and completes <see cref="Released"/>.
/// </remarks>
internal sealed unsafe class UsbfsDevice : IUsbHostDevice, IEventHandler
{
    /// <summary>usbfs tracks claims in a bitmap of one long (§1.7).</summary>
    public const int MaxInterfaces = 64;

    private static readonly Task<int> s_noDevice = Task.FromResult(-ENODEV);

    private readonly IUsbfsFile _file;
    private readonly EventLoop _loop;
    private readonly string _sysfsRoot;
    private readonly ILogger _logger;
    private readonly PortClaim? _claim;
    private readonly UsbfsWorker _worker;
    private readonly TaskCompletionSource _released = new(TaskCreationOptions.RunContinuationsAsynchronously);

    // Loop thread.
    private readonly Dictionary<UsbTransfer, UrbEntry> _byTransfer = new(ReferenceEqualityComparer.Instance);
    private readonly List<UrbEntry?> _entries = new();
    private readonly Stack<int> _freeEntries = new();
    private long _registration;
    private bool _handleRefAdded;
    private int _pending;

    // Worker thread (and the constructor before it).
    private readonly bool[] _claimed = new bool[MaxInterfaces];
    private readonly bool[] _hadDriver = new bool[MaxInterfaces];

    // Set on the loop thread, read by the worker.
    private volatile bool _gone;
    private volatile bool _disposed;
    private int _disposeStarted;
    private volatile bool _closeForSuccessor;
    private int _retired;

    /// <summary>
    /// Claims every interface and registers with the loop. <paramref name="claim"/> is the device's port
    /// claim (null: none, as in tests); the device owns it from here on, and gives it back when an open
    /// fails. Throws <see cref="UsbDeviceException"/> if an interface cannot be claimed.
    /// </summary>
    public UsbfsDevice(IUsbfsFile file, EventLoop loop, string sysfsRoot, UsbDeviceInfo info, string path, ILogger logger, PortClaim? claim = null, TimeSpan slowThreshold = default)
    {
        _file = file;
        _loop = loop;
        _sysfsRoot = sysfsRoot;
        _logger = logger;
        _claim = claim;
        BusId = info.BusId;

        int speed = file.GetSpeed();
        Speed = speed > 0 && speed <= (int)UsbSpeed.SuperPlus ? (UsbSpeed)speed : info.Speed;
        Capabilities = file.GetCapabilities(out uint caps) == 0 ? caps : 0;
        Descriptors = UsbSysfs.ReadDescriptors(sysfsRoot, BusId);

        int claimed = ClaimAll(null, out int failedInterface, out int error);
        if (error != 0)
        {
            HandBackAfterFailedOpen();
            throw new UsbDeviceException($"Open {BusId}: cannot claim interface {failedInterface} of {path}: errno {-error}", -error);
        }

        bool added = false;
        try
        {
            file.Handle.DangerousAddRef(ref added);
            _handleRefAdded = added;
            // An EPOLLHUP that fires before the id is stored is ignored by OnEvent and, being level-triggered, fires again.
            Volatile.Write(ref _registration, loop.Register((int)file.Handle.DangerousGetHandle(), this, EventLoop.EpollOut | EventLoop.EpollHup | EventLoop.EpollErr));
        }
        catch (Exception e)
        {
            if (added)
            {
                file.Handle.DangerousRelease();
                _handleRefAdded = false;
            }
            HandBackAfterFailedOpen();
            throw new UsbDeviceException($"Open {BusId}: cannot watch {path}", e);
        }
        _worker = new UsbfsWorker(BusId, logger, slowThreshold);
        _logger.UsbfsOpened(BusId, path, Speed, claimed, Capabilities);
    }

    public string BusId { get; }

    public UsbSpeed Speed { get; }

    public ReadOnlyMemory<byte> Descriptors { get; }

    /// <summary>USBDEVFS_CAP_* bits (0 if the kernel predates GET_CAPABILITIES).</summary>
    public uint Capabilities { get; }

    /// <summary>Transfers submitted and not yet completed.</summary>
    public int PendingCount => _pending;

    /// <summary>True once the kernel reported the device unplugged (POLLHUP or ENODEV).</summary>
    public bool IsGone => _gone;

    public Task Released => _released.Task;

    /// <summary>Native URBs handed to a discard that has not returned yet (tests).</summary>
    internal int RetiredUrbs => Volatile.Read(ref _retired);

    public void Submit(UsbTransfer transfer)
    {
        ArgumentNullException.ThrowIfNull(transfer);
        Debug.Assert(_loop.IsLoopThread || _loop.Completion.IsCompleted, "usbfs devices are driven from the event loop thread");
        if (_gone || _disposed)
        {
            transfer.Complete(-ENODEV, 0);
            return;
        }
        if (!IsSubmittable(transfer))
        {
            transfer.Complete(-EINVAL, 0);
            return;
        }

        UrbEntry entry = EntryFor(transfer);
        if (entry.Pending)
        {
            throw new InvalidOperationException("A UsbTransfer was submitted again before it completed.");
        }
        bool iso = transfer.Type == UsbTransferType.Isochronous;
        if (entry.Discard is not null || (iso && !entry.HasIsoRoom))
        {
            PrepareUrb(entry, iso);
        }
        usbdevfs_urb* urb = entry.Urb;
        urb->type = (byte)transfer.Type;
        urb->endpoint = transfer.Endpoint;
        urb->status = 0;
        // SHORT_NOT_OK only for bulk and interrupt IN: control data stages are left to the kernel, and usbcore
        // does not allow it on isochronous URBs (urb.c warns about it).
        urb->flags = transfer.ShortNotOk && transfer.IsIn && transfer.Type is UsbTransferType.Bulk or UsbTransferType.Interrupt ? USBDEVFS_URB_SHORT_NOT_OK : 0;
        urb->buffer = transfer.ExternalBuffer != 0 ? (void*)transfer.ExternalBuffer : entry.Buffer;
        urb->buffer_length = transfer.Length;
        urb->actual_length = 0;
        urb->start_frame = transfer.StartFrame;
        urb->number_of_packets = 0;
        urb->error_count = 0;
        urb->signr = 0;
        urb->usercontext = (void*)(entry.Index + 1);
        if (iso)
        {
            // The guest's frame numbers mean nothing to the host controller: schedule as soon as possible.
            urb->flags |= USBDEVFS_URB_ISO_ASAP;
            urb->number_of_packets = transfer.NumberOfPackets;
            usbdevfs_iso_packet_desc* desc = usbdevfs_urb.iso_frame_desc(urb);
            for (int i = 0; i < transfer.NumberOfPackets; i++)
            {
                desc[i].length = (uint)transfer.IsoPackets[i].Length;
                desc[i].actual_length = 0;
                desc[i].status = 0;
            }
        }

        int rc = _file.SubmitUrb(urb);
        if (rc < 0)
        {
            transfer.Complete(rc, 0);
            return;
        }
        entry.Pending = true;
        _pending++;
    }

    /// <summary>
    /// Loop thread: the owner gave <paramref name="transfer"/> up; its entry and native URB go (a discard still
    /// holding the URB frees it when it returns). Its index is reused by the next new transfer.
    /// </summary>
    public void Forget(UsbTransfer transfer)
    {
        ArgumentNullException.ThrowIfNull(transfer);
        if (_disposed || !_byTransfer.TryGetValue(transfer, out UrbEntry? entry) || entry.Pending)
        {
            return;
        }
        _byTransfer.Remove(transfer);
        _entries[entry.Index] = null;
        _freeEntries.Push(entry.Index);
        if (entry.Discard is { } discard && discard.TryRetire())
        {
            Interlocked.Increment(ref _retired);
        }
        else
        {
            NativeMemory.Free(entry.Urb);
        }
    }

    /// <summary>
    /// Queues USBDEVFS_DISCARDURB on the worker (usb_kill_urb waits for the host controller to give the URB
    /// back, which a sick controller or device can make take long). The URB then waits on the completed
    /// list and the next EPOLLOUT reaps it (-ENOENT, or its real status if it finished first).
    /// </summary>
    public void Cancel(UsbTransfer transfer)
    {
        ArgumentNullException.ThrowIfNull(transfer);
        if (_gone || _disposed || !_byTransfer.TryGetValue(transfer, out UrbEntry? entry) || !entry.Pending)
        {
            return;
        }
        if (entry.Discard is { IsDone: false })
        {
            return; // this very submission has a discard queued or running
        }
        var discard = new DiscardWork(this, entry.Urb);
        entry.Discard = discard;
        if (!_worker.Post(discard))
        {
            entry.Discard = null;
        }
    }

    public Task<int> SetConfigurationAsync(int configurationValue) => StartOperation(OperationKind.SetConfiguration, configurationValue, 0);

    public Task<int> SetInterfaceAsync(int interfaceNumber, int alternateSetting) => StartOperation(OperationKind.SetInterface, interfaceNumber, alternateSetting);

    public Task<int> ClearHaltAsync(byte endpoint) => StartOperation(OperationKind.ClearHalt, endpoint, 0);

    public Task<int> ResetAsync() => StartOperation(OperationKind.Reset, 0, 0);

    void IEventHandler.OnEvent(uint events)
    {
        if (_disposed || Volatile.Read(ref _registration) == 0)
        {
            return;
        }
        bool alive = ReapAll();
        if (_disposed)
        {
            return;
        }
        if (!alive || (events & (EventLoop.EpollHup | EventLoop.EpollErr)) != 0)
        {
            OnGone();
        }
    }

    /// <summary>
    /// Abandons the device (see the type's remarks): on the loop thread, inline when called there (or once
    /// the loop has stopped), else posted and waited for; the hand-back follows on the worker.
    /// </summary>
    public void Dispose()
    {
        if (Volatile.Read(ref _disposeStarted) != 0)
        {
            return;
        }
        LoopSync.Run(_loop, Abandon);
    }

    /// <summary>
    /// As <see cref="Dispose"/>, but for a daemon that stops and will be restarted: the port claim is kept
    /// for the successor (fd store) and no interface is handed back to a dom0 driver.
    /// </summary>
    public void Close()
    {
        _closeForSuccessor = true;
        Dispose();
    }

    private void Abandon()
    {
        if (Interlocked.Exchange(ref _disposeStarted, 1) != 0)
        {
            return;
        }
        _disposed = true;
        int abandoned = _pending;
        CompleteAllPending(-ENODEV);
        Unregister();
        if (_gone)
        {
            // Parking takes a lock and arms a timer, no ioctl: the port is ready at once for an Open of the
            // device that re-enumerates there, even while this one's worker is still busy.
            _claim?.Park();
        }
        _logger.UsbfsAbandoned(BusId, abandoned);
        // From here the loop never touches the entries again: they travel with the teardown to the worker.
        _worker.PostLast(new TeardownWork(this));
    }

    private Task<int> StartOperation(OperationKind kind, int argument, int argument2)
    {
        if (_gone || _disposed)
        {
            return s_noDevice;
        }
        var operation = new Operation(this, kind, argument, argument2);
        return _worker.Post(operation) ? operation.Task : s_noDevice;
    }

    /// <summary>
    /// Reaps until nothing is left: until EAGAIN, or until every URB this device submitted is back (the kernel
    /// has no other to give, and one ioctl less a completion pass counts: a system call in a PV dom0 goes
    /// through Xen). Returns false if the device is gone (ENODEV) or unusable.
    /// </summary>
    private bool ReapAll()
    {
        while (!_disposed)
        {
            int rc = _file.ReapUrbNoDelay(out usbdevfs_urb* urb);
            if (rc == 0)
            {
                Finish(urb);
                if (_pending == 0)
                {
                    return true;
                }
                continue;
            }
            if (rc == -EINTR)
            {
                continue;
            }
            if (rc == -EAGAIN)
            {
                return true;
            }
            if (rc != -ENODEV)
            {
                _logger.UsbfsReapFailed(BusId, -rc);
            }
            return false;
        }
        return true;
    }

    private void Finish(usbdevfs_urb* urb)
    {
        nint context = (nint)urb->usercontext;
        int index = (int)context - 1;
        if (index < 0 || index >= _entries.Count || _entries[index] is not { } entry || entry.Urb != urb || !entry.Pending)
        {
            _logger.UsbfsUnknownUrb(BusId, context);
            return;
        }
        entry.Pending = false;
        _pending--;
        UsbTransfer t = entry.Transfer;
        t.ErrorCount = urb->error_count;
        if (t.Type == UsbTransferType.Isochronous)
        {
            usbdevfs_iso_packet_desc* desc = usbdevfs_urb.iso_frame_desc(urb);
            for (int i = 0; i < t.NumberOfPackets; i++)
            {
                t.IsoPackets[i].ActualLength = (int)desc[i].actual_length;
                t.IsoPackets[i].Status = (int)desc[i].status;
            }
        }
        // For control URBs usbfs already counts the data stage only, without the 8 SETUP bytes (§1.5).
        t.Complete(urb->status, urb->actual_length);
    }

    /// <summary>POLLHUP/POLLERR or ENODEV: reap what the kernel still holds, fail the rest, stop watching.</summary>
    private void OnGone()
    {
        if (_gone || _disposed)
        {
            return;
        }
        _gone = true;
        ReapAll();
        int failed = _pending;
        CompleteAllPending(-ENODEV);
        Unregister();
        _logger.UsbfsDeviceGone(BusId, failed);
    }

    private void CompleteAllPending(int status)
    {
        for (int i = 0; i < _entries.Count; i++)
        {
            if (_entries[i] is { Pending: true } entry)
            {
                entry.Pending = false;
                _pending--;
                entry.Transfer.Complete(status, 0);
            }
        }
    }

    private void Unregister()
    {
        if (_registration != 0)
        {
            _loop.Unregister(_registration, (int)_file.Handle.DangerousGetHandle());
            _registration = 0;
        }
        if (_handleRefAdded)
        {
            _handleRefAdded = false;
            _file.Handle.DangerousRelease();
        }
    }

    /// <summary>
    /// Loop thread, before (re)submitting: an entry whose last URB still has a discard queued or running
    /// gets a fresh usbdevfs_urb (the discard frees the old one when it returns); an entry first used for
    /// ISO gets one with room for the packet descriptors.
    /// </summary>
    private void PrepareUrb(UrbEntry entry, bool iso)
    {
        DiscardWork? discard = entry.Discard;
        entry.Discard = null;
        bool replace = iso && !entry.HasIsoRoom;
        if (discard is not null && discard.TryRetire())
        {
            Interlocked.Increment(ref _retired);
            replace = true;
        }
        else if (replace)
        {
            NativeMemory.Free(entry.Urb);
        }
        if (replace)
        {
            entry.HasIsoRoom |= iso;
            entry.Urb = AllocateUrb(entry.HasIsoRoom);
        }
    }

    // ---- Worker thread ----

    private int RunOperation(OperationKind kind, int argument, int argument2)
    {
        if (_gone || _disposed)
        {
            return -ENODEV;
        }
        int rc;
        switch (kind)
        {
            case OperationKind.SetConfiguration:
                // The kernel refuses SETCONFIGURATION (EBUSY) while any interface is claimed, ours included (§1.10).
                // The port claim keeps dom0's drivers off the new interfaces the kernel creates (and probes) meanwhile.
                ReleaseAll(_worker);
                _worker.Step("SETCONFIGURATION", argument);
                rc = _file.SetConfiguration(argument);
                _logger.UsbfsControlOperation(BusId, "SETCONFIGURATION", argument, rc);
                if (rc != -ENODEV && !_disposed)
                {
                    // The new configuration's interfaces exist in sysfs once the ioctl returns: claim them
                    // (detaching any driver, should there be no port claim).
                    ClaimAll(_worker, out _, out _);
                }
                return rc;
            case OperationKind.SetInterface:
                _worker.Step("SETINTERFACE", argument);
                rc = _file.SetInterface(argument, argument2);
                _logger.UsbfsControlOperation(BusId, "SETINTERFACE", argument, rc);
                return rc;
            case OperationKind.ClearHalt:
                _worker.Step("CLEAR_HALT", argument);
                return _file.ClearHalt(argument);
            default:
                // usbfs has no reset hooks: a reset unbinds interfaces claimed through usbfs and rebinds them
                // (refused on a claimed port). Release first, then claim again (§1.11, libusb op_reset_device).
                ReleaseAll(_worker);
                _worker.Step("RESET");
                rc = _file.Reset();
                _logger.UsbfsControlOperation(BusId, "RESET", 0, rc);
                if (rc != -ENODEV && !_disposed)
                {
                    ClaimAll(_worker, out _, out _);
                }
                return rc;
        }
    }

    private void Teardown(UsbfsWorker worker)
    {
        // The loop may not have seen POLLHUP yet (the uevent of an unplug can come first): every ioctl but the
        // reaps answers ENODEV once the device is gone (§1.2), so ask before giving up the port.
        worker.Step("CONNINFO_EX");
        bool gone = _gone || _file.GetConnInfo(out _, out _) == -ENODEV;
        bool keep = _claim is not null && (_claim.Registry.KeepingForRestart || _closeForSuccessor);
        int reconnected = 0;
        if (_closeForSuccessor && !gone)
        {
            // Closing the node releases the interfaces (and kills what is left); the claimed port keeps dom0's
            // drivers off until the next daemon opens the device again.
            _claim?.KeepForSuccessor();
        }
        else if (_claim is not null && (gone || keep))
        {
            // Gone: whatever enumerates on that port next must not meet dom0's drivers before an Open of this
            // bus id takes the claim over. Keep: the next daemon takes it over from the fd store.
            _claim.Park();
        }
        else
        {
            // The port claim goes first: while it is held the kernel refuses every driver's probe.
            _claim?.Release(worker);
            if (!gone)
            {
                ReleaseAll(worker);
                // Every interface we held is offered to dom0's drivers, not only those we took a driver from:
                // a device re-adopted after a restart had none left to take (the predecessor closed it without
                // hand-back). USBDEVFS_CONNECT binds nothing where no driver wants the interface.
                var offer = new List<int>();
                foreach (UsbInterfaceInfo iface in UsbSysfs.ReadInterfaces(_sysfsRoot, BusId))
                {
                    if (iface.Number < MaxInterfaces && (_hadDriver[iface.Number] || iface.Driver is null || iface.Driver == UsbfsDriverName))
                    {
                        offer.Add(iface.Number);
                    }
                }
                Array.Clear(_hadDriver);
                reconnected = Math.Max(0, UsbfsHandBack.Reattach(_file, _sysfsRoot, BusId, offer, worker, _logger));
            }
        }
        worker.Step("close");
        _file.Dispose();
        foreach (UrbEntry? entry in _entries)
        {
            if (entry is null)
            {
                continue;
            }
            // A discard still owning this URB has run already: the queue is serial and the teardown is last.
            NativeMemory.Free(entry.Urb);
        }
        _entries.Clear();
        _byTransfer.Clear();
        _logger.UsbfsReleased(BusId, reconnected);
        _released.TrySetResult();
    }

    /// <summary>Open failed after claiming: the same hand-back as a teardown, on the caller's thread.</summary>
    private void HandBackAfterFailedOpen()
    {
        _claim?.Release(null);
        ReleaseAll(null);
        var hadDriver = new List<int>();
        for (int n = 0; n < MaxInterfaces; n++)
        {
            if (_hadDriver[n])
            {
                _hadDriver[n] = false;
                hadDriver.Add(n);
            }
        }
        foreach (int n in hadDriver)
        {
            int rc = _file.ConnectDriver(n);
            if (rc < 0 && rc != -EBUSY)
            {
                _logger.UsbfsReconnectFailed(BusId, n, -rc);
            }
        }
    }

    /// <summary>Claims every interface of the active configuration (from sysfs). Returns how many are claimed.</summary>
    private int ClaimAll(UsbfsWorker? worker, out int failedInterface, out int error)
    {
        failedInterface = -1;
        error = 0;
        int count = 0;
        foreach (UsbInterfaceInfo iface in UsbSysfs.ReadInterfaces(_sysfsRoot, BusId))
        {
            int n = iface.Number;
            if (n >= MaxInterfaces || _claimed[n])
            {
                count += n < MaxInterfaces ? 1 : 0;
                continue;
            }
            worker?.Step("DISCONNECT_CLAIM", n);
            int rc = Claim(n, iface.Driver);
            if (rc < 0)
            {
                _logger.UsbfsClaimFailed(BusId, n, -rc);
                if (error == 0)
                {
                    failedInterface = n;
                    error = rc;
                }
                continue;
            }
            count++;
        }
        return count;
    }

    private int Claim(int n, string? driver)
    {
        bool hadDriver = driver is not null && driver != UsbfsDriverName;
        // Atomic detach + claim; EXCEPT_DRIVER "usbfs" refuses (EBUSY) to steal from another usbfs user.
        int rc = _file.DisconnectClaim(n, USBDEVFS_DISCONNECT_CLAIM_EXCEPT_DRIVER, UsbfsDriverName);
        if (rc == -ENOTTY)
        {
            // Kernel without DISCONNECT_CLAIM: detach (racy without a port claim: a driver may re-probe) then claim.
            if (hadDriver)
            {
                int d = _file.DisconnectDriver(n);
                if (d < 0 && d != -ENODATA)
                {
                    return d;
                }
            }
            rc = _file.ClaimInterface(n);
        }
        if (rc < 0)
        {
            return rc;
        }
        _claimed[n] = true;
        if (hadDriver)
        {
            _hadDriver[n] = true;
            _logger.UsbfsDriverDetached(BusId, n, driver!);
        }
        return 0;
    }

    private void ReleaseAll(UsbfsWorker? worker)
    {
        for (int n = 0; n < MaxInterfaces; n++)
        {
            if (_claimed[n])
            {
                _claimed[n] = false;
                worker?.Step("RELEASEINTERFACE", n);
                _file.ReleaseInterface(n);
            }
        }
    }

    private static bool IsSubmittable(UsbTransfer t)
    {
        if (t.Length < 0 || t.Length > t.Capacity)
        {
            return false;
        }
        if (t.Type == UsbTransferType.Control && t.Length < UsbTransfer.SetupSize)
        {
            return false;
        }
        // usbfs takes the packets' lengths, not Length, as an isochronous URB's buffer length: they must fit the memory.
        return t.Type != UsbTransferType.Isochronous || t.IsoPacketsLength is >= 0 and var n && n <= t.Capacity;
    }

    private UrbEntry EntryFor(UsbTransfer transfer)
    {
        if (_byTransfer.TryGetValue(transfer, out UrbEntry? entry))
        {
            return entry;
        }
        bool iso = transfer.Type == UsbTransferType.Isochronous;
        int index = _freeEntries.Count > 0 ? _freeEntries.Pop() : _entries.Count;
        entry = new UrbEntry(transfer, index, AllocateUrb(iso))
        {
            HasIsoRoom = iso,
            // UsbTransfer buffers are allocated on the pinned object heap, so this address is stable.
            Buffer = Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(transfer.Buffer)),
        };
        if (index == _entries.Count)
        {
            _entries.Add(entry);
        }
        else
        {
            _entries[index] = entry;
        }
        _byTransfer.Add(transfer, entry);
        return entry;
    }

    private static usbdevfs_urb* AllocateUrb(bool iso)
    {
        nuint size = (nuint)(sizeof(usbdevfs_urb) + (iso ? UsbTransfer.MaxIsoPackets * sizeof(usbdevfs_iso_packet_desc) : 0));
        return (usbdevfs_urb*)NativeMemory.AllocZeroed(size);
    }

    private enum OperationKind
    {
        SetConfiguration,
        SetInterface,
        ClearHalt,
        Reset,
    }

    private sealed class UrbEntry(UsbTransfer transfer, int index, usbdevfs_urb* urb)
    {
        public UsbTransfer Transfer { get; } = transfer;

        public int Index { get; } = index;

        public usbdevfs_urb* Urb { get; set; } = urb;

        public void* Buffer { get; init; }

        public bool HasIsoRoom { get; set; }

        public bool Pending { get; set; }

        /// <summary>The discard last queued for <see cref="Urb"/>, until the entry is submitted again.</summary>
        public DiscardWork? Discard { get; set; }
    }

    /// <summary>A control operation and its result: the Task completes (asynchronously) with 0 or -errno.</summary>
    private sealed class Operation(UsbfsDevice device, OperationKind kind, int argument, int argument2)
        : TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously), IUsbfsWork
    {
        public void Run(UsbfsWorker worker)
        {
            int rc = -EIO;
            try
            {
                rc = device.RunOperation(kind, argument, argument2);
            }
            finally
            {
                TrySetResult(rc);
            }
        }
    }

    /// <summary>
    /// DISCARDURB of one submission's URB. State: Queued until the ioctl returned (Done), unless the loop
    /// resubmitted the entry meanwhile and gave the address up to it (Retired): then this frees it.
    /// </summary>
    private sealed class DiscardWork(UsbfsDevice device, usbdevfs_urb* urb) : IUsbfsWork
    {
        private const int Queued = 0;
        private const int Done = 1;
        private const int Retired = 2;

        private int _state;

        public bool IsDone => Volatile.Read(ref _state) == Done;

        /// <summary>Loop thread: hands the URB to this discard if it has not returned yet.</summary>
        public bool TryRetire() => Interlocked.CompareExchange(ref _state, Retired, Queued) == Queued;

        public void Run(UsbfsWorker worker)
        {
            // After Dispose or unplug the discard is moot: the release and the close kill every URB.
            if (!device._disposed && !device._gone)
            {
                worker.Step("DISCARDURB");
                // EINVAL: it completed already (the reap delivers it); ENODEV: POLLHUP is on its way.
                device._file.DiscardUrb(urb);
            }
            if (Interlocked.CompareExchange(ref _state, Done, Queued) == Retired)
            {
                NativeMemory.Free(urb);
                Interlocked.Decrement(ref device._retired);
            }
        }
    }

    private sealed class TeardownWork(UsbfsDevice device) : IUsbfsWork
    {
        public void Run(UsbfsWorker worker)
        {
            try
            {
                device.Teardown(worker);
            }
            finally
            {
                device._released.TrySetResult();
            }
        }
    }
}
