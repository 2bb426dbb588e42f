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
/// A host USB device driven through usbfs (host-interfaces.md §1): every interface of the active
/// configuration claimed (kernel drivers detached), transfers submitted as asynchronous URBs and
/// reaped when the event loop sees the fd writable.
/// </summary>
/// <remarks>
/// Threading: the constructor runs on the caller's thread before the fd is registered; from then on
/// everything (Submit, Cancel, the control operations, reaping, completions) runs on the
/// <see cref="EventLoop"/> thread, so the device needs no locks. <see cref="Dispose"/> may be called
/// from any thread: it runs the teardown on the loop thread and waits for it.
///
/// Each <see cref="UsbTransfer"/> gets one native usbdevfs_urb (plus room for ISO descriptors when it
/// is first used for ISO), made the first time it is submitted and reused from then on: the kernel
/// identifies a URB by that address and writes the result into it at reap time, so it must not move
/// (§1.5). The URB's usercontext is the entry's index + 1, which finds the transfer again at reap.
/// </remarks>
internal sealed unsafe class UsbfsDevice : IUsbHostDevice, IEventHandler
{
    /// <summary>usbfs tracks claims in a bitmap of one long (§1.7).</summary>
    public const int MaxInterfaces = 64;

    private readonly IUsbfsFile _file;
    private readonly EventLoop _loop;
    private readonly string _sysfsRoot;
    private readonly ILogger _logger;
    private readonly Dictionary<UsbTransfer, UrbEntry> _byTransfer = new(ReferenceEqualityComparer.Instance);
    private readonly List<UrbEntry> _entries = new();
    private readonly bool[] _claimed = new bool[MaxInterfaces];
    private readonly bool[] _hadDriver = new bool[MaxInterfaces];
    private long _registration;
    private bool _handleRefAdded;
    private int _pending;
    private bool _gone;
    private bool _closed;
    private int _disposeStarted;
    private bool _reconnectOnTeardown = true;

    /// <summary>Claims every interface and registers with the loop. Throws <see cref="UsbDeviceException"/> if an interface cannot be claimed.</summary>
    public UsbfsDevice(IUsbfsFile file, EventLoop loop, string sysfsRoot, UsbDeviceInfo info, string path, ILogger logger)
    {
        _file = file;
        _loop = loop;
        _sysfsRoot = sysfsRoot;
        _logger = logger;
        BusId = info.BusId;

        int speed = file.GetSpeed();
        Speed = speed > 0 && speed <= (int)UsbSpeed.SuperPlus ? (UsbSpeed)speed : info.Speed;
        Capabilities = file.GetCapabilities(out uint caps) == 0 ? caps : 0;

        int claimed = ClaimAll(out int failedInterface, out int error);
        if (error != 0)
        {
            ReleaseAndReconnect();
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
            ReleaseAndReconnect();
            throw new UsbDeviceException($"Open {BusId}: cannot watch {path}", e);
        }
        _logger.UsbfsOpened(BusId, path, Speed, claimed, Capabilities);
    }

    public string BusId { get; }

    public UsbSpeed Speed { get; }

    /// <summary>USBDEVFS_CAP_* bits (0 if the kernel predates GET_CAPABILITIES).</summary>
    public uint Capabilities { get; }

    /// <summary>Transfers submitted and not yet completed.</summary>
    public int PendingCount => _pending;

    /// <summary>True once the kernel reported the device unplugged (POLLHUP or ENODEV).</summary>
    public bool IsGone => _gone;

    public void Submit(UsbTransfer transfer)
    {
        ArgumentNullException.ThrowIfNull(transfer);
        Debug.Assert(_loop.IsLoopThread || _loop.Completion.IsCompleted, "usbfs devices are driven from the event loop thread");
        if (_gone || _closed || Volatile.Read(ref _disposeStarted) != 0)
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
        usbdevfs_urb* urb = entry.Urb;
        urb->type = (byte)transfer.Type;
        urb->endpoint = transfer.Endpoint;
        urb->status = 0;
        // SHORT_NOT_OK only means something on IN data stages; control URBs are left to the kernel.
        urb->flags = transfer.ShortNotOk && transfer.IsIn && transfer.Type != UsbTransferType.Control ? USBDEVFS_URB_SHORT_NOT_OK : 0;
        urb->buffer = transfer.ExternalBuffer != 0 ? (void*)transfer.ExternalBuffer : entry.Buffer;
        urb->buffer_length = transfer.Length;
        urb->actual_length = 0;
        urb->start_frame = transfer.StartFrame;
        urb->number_of_packets = 0;
        urb->error_count = 0;
        urb->signr = 0;
        urb->usercontext = (void*)(entry.Index + 1);
        if (transfer.Type == UsbTransferType.Isochronous)
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

    public void Cancel(UsbTransfer transfer)
    {
        ArgumentNullException.ThrowIfNull(transfer);
        if (_gone || _closed || !_byTransfer.TryGetValue(transfer, out UrbEntry? entry) || !entry.Pending)
        {
            return;
        }
        // DISCARDURB kills synchronously; the URB then waits on the completed list and the next
        // EPOLLOUT reaps it (-ENOENT, or its real status if it finished first). EINVAL means it had
        // already completed (the reap delivers it); ENODEV means POLLHUP is on its way.
        _file.DiscardUrb(entry.Urb);
    }

    // Interim: the operations still run on the caller's (loop) thread; they move to a worker next.
    public Task<int> SetConfigurationAsync(int configurationValue) => Task.FromResult(SetConfiguration(configurationValue));

    public Task<int> SetInterfaceAsync(int interfaceNumber, int alternateSetting) => Task.FromResult(SetInterface(interfaceNumber, alternateSetting));

    public Task<int> ClearHaltAsync(byte endpoint) => Task.FromResult(ClearHalt(endpoint));

    public Task<int> ResetAsync() => Task.FromResult(Reset());

    public Task Released => Task.CompletedTask;

    /// <summary>Interim: the teardown without handing the interfaces back to their drivers (port claims come next).</summary>
    public void Close()
    {
        _reconnectOnTeardown = false;
        Dispose();
    }

    public int SetConfiguration(int configurationValue)
    {
        if (_gone || _closed)
        {
            return -ENODEV;
        }
        // The kernel refuses SETCONFIGURATION (EBUSY) while any interface is claimed, ours included (§1.10).
        ReleaseAll();
        int rc = _file.SetConfiguration(configurationValue);
        _logger.UsbfsControlOperation(BusId, "SETCONFIGURATION", configurationValue, rc);
        if (rc != -ENODEV)
        {
            // The new configuration's interfaces exist in sysfs once the ioctl returns, and kernel
            // drivers may already have bound them: detach and claim again.
            ClaimAll(out _, out _);
        }
        return rc;
    }

    public int SetInterface(int interfaceNumber, int alternateSetting)
    {
        if (_gone || _closed)
        {
            return -ENODEV;
        }
        int rc = _file.SetInterface(interfaceNumber, alternateSetting);
        _logger.UsbfsControlOperation(BusId, "SETINTERFACE", interfaceNumber, rc);
        return rc;
    }

    public int ClearHalt(byte endpoint)
    {
        if (_gone || _closed)
        {
            return -ENODEV;
        }
        return _file.ClearHalt(endpoint);
    }

    public int Reset()
    {
        if (_gone || _closed)
        {
            return -ENODEV;
        }
        // usbfs has no reset hooks: a reset unbinds interfaces claimed through usbfs and may rebind
        // kernel drivers to them. Release first, then detach and claim again (§1.11, libusb op_reset_device).
        ReleaseAll();
        int rc = _file.Reset();
        _logger.UsbfsControlOperation(BusId, "RESET", 0, rc);
        if (rc != -ENODEV)
        {
            ClaimAll(out _, out _);
        }
        return rc;
    }

    void IEventHandler.OnEvent(uint events)
    {
        if (_closed || Volatile.Read(ref _registration) == 0)
        {
            return;
        }
        bool alive = ReapAll();
        if (_closed)
        {
            return;
        }
        if (!alive || (events & (EventLoop.EpollHup | EventLoop.EpollErr)) != 0)
        {
            OnGone();
        }
    }

    /// <summary>
    /// Discards and reaps everything in flight (completing it, typically with -ENOENT), releases every
    /// interface, hands interfaces that had a kernel driver back to it (USBDEVFS_CONNECT) and closes
    /// the node. Safe from any thread; runs on the loop thread.
    /// </summary>
    public void Dispose()
    {
        if (Volatile.Read(ref _disposeStarted) != 0)
        {
            return;
        }
        LoopSync.Run(_loop, Teardown);
    }

    private void Teardown()
    {
        if (Interlocked.Exchange(ref _disposeStarted, 1) != 0)
        {
            return;
        }
        if (!_gone)
        {
            for (int i = 0; i < _entries.Count; i++)
            {
                if (_entries[i].Pending && _file.DiscardUrb(_entries[i].Urb) == -ENODEV)
                {
                    break;
                }
            }
            if (!ReapAll())
            {
                _gone = true;
            }
        }
        // Whatever the kernel did not hand back is dead with the fd: closing kills it and nothing is reaped after.
        CompleteAllPending(_gone ? -ENODEV : -ENOENT);
        Unregister();
        int reconnected = _gone ? 0 : _reconnectOnTeardown ? ReleaseAndReconnect() : ReleaseOnly();
        _closed = true;
        _file.Dispose();
        foreach (UrbEntry entry in _entries)
        {
            NativeMemory.Free(entry.Urb);
        }
        _entries.Clear();
        _byTransfer.Clear();
        _logger.UsbfsReleased(BusId, reconnected);
    }

    /// <summary>Reaps until nothing is left. Returns false if the device is gone (ENODEV) or unusable.</summary>
    private bool ReapAll()
    {
        while (!_closed)
        {
            int rc = _file.ReapUrbNoDelay(out usbdevfs_urb* urb);
            if (rc == 0)
            {
                Finish(urb);
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
        if (index < 0 || index >= _entries.Count || _entries[index].Urb != urb || !_entries[index].Pending)
        {
            _logger.UsbfsUnknownUrb(BusId, context);
            return;
        }
        UrbEntry entry = _entries[index];
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
        if (_gone || _closed)
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
            UrbEntry entry = _entries[i];
            if (entry.Pending)
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

    /// <summary>Claims every interface of the active configuration (from sysfs). Returns how many are claimed.</summary>
    private int ClaimAll(out int failedInterface, out int error)
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
            // Kernel without DISCONNECT_CLAIM: detach (racy, a driver may re-probe) then claim.
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

    private void ReleaseAll()
    {
        for (int n = 0; n < MaxInterfaces; n++)
        {
            if (_claimed[n])
            {
                _claimed[n] = false;
                _file.ReleaseInterface(n);
            }
        }
    }

    private int ReleaseOnly()
    {
        ReleaseAll();
        return 0;
    }

    /// <summary>Releases every claim and asks the kernel to bind drivers where there were some. Returns how many were handed back.</summary>
    private int ReleaseAndReconnect()
    {
        ReleaseAll();
        int reconnected = 0;
        for (int n = 0; n < MaxInterfaces; n++)
        {
            if (!_hadDriver[n])
            {
                continue;
            }
            _hadDriver[n] = false;
            // USBDEVFS_CONNECT returns device_attach()'s result: 1 = a driver was bound, 0 = none wanted the interface.
            int rc = _file.ConnectDriver(n);
            if (rc > 0)
            {
                reconnected++;
            }
            else if (rc < 0 && rc != -EBUSY)
            {
                // EBUSY: a driver is bound already. ENOENT/EINVAL: that interface is not in the current configuration.
                _logger.UsbfsReconnectFailed(BusId, n, -rc);
            }
        }
        return reconnected;
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
        return t.Type != UsbTransferType.Isochronous || (t.NumberOfPackets >= 1 && t.NumberOfPackets <= UsbTransfer.MaxIsoPackets);
    }

    private UrbEntry EntryFor(UsbTransfer transfer)
    {
        if (_byTransfer.TryGetValue(transfer, out UrbEntry? entry))
        {
            if (transfer.Type == UsbTransferType.Isochronous && !entry.HasIsoRoom)
            {
                NativeMemory.Free(entry.Urb);
                entry.Urb = AllocateUrb(iso: true);
                entry.HasIsoRoom = true;
            }
            return entry;
        }
        bool iso = transfer.Type == UsbTransferType.Isochronous;
        entry = new UrbEntry(transfer, _entries.Count, AllocateUrb(iso))
        {
            HasIsoRoom = iso,
            // UsbTransfer buffers are allocated on the pinned object heap, so this address is stable.
            Buffer = Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(transfer.Buffer)),
        };
        _entries.Add(entry);
        _byTransfer.Add(transfer, entry);
        return entry;
    }

    private static usbdevfs_urb* AllocateUrb(bool iso)
    {
        nuint size = (nuint)(sizeof(usbdevfs_urb) + (iso ? UsbTransfer.MaxIsoPackets * sizeof(usbdevfs_iso_packet_desc) : 0));
        return (usbdevfs_urb*)NativeMemory.AllocZeroed(size);
    }

    private sealed class UrbEntry(UsbTransfer transfer, int index, usbdevfs_urb* urb)
    {
        public UsbTransfer Transfer { get; } = transfer;

        public int Index { get; } = index;

        public usbdevfs_urb* Urb { get; set; } = urb;

        public void* Buffer { get; init; }

        public bool HasIsoRoom { get; set; }

        public bool Pending { get; set; }
    }
}
