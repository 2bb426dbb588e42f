using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using Tmds.Linux;
using XenPvUsb.Interop.Linux;
using XenPvUsb.Usb.Usbfs;

namespace XenPvUsb.Tests.Usbfs;

/// <summary>
/// An in-memory usbfs node with the kernel's submit/reap/discard semantics (host-interfaces.md §1.5):
/// a URB's results (status, length, IN data) are copied into user memory only when it is reaped, as
/// devio.c processcompl does. Its pollable fd is the read end of a pipe: never writable (so EPOLLOUT
/// never fires by itself; tests call the device's handler), and closing the write end raises a real
/// EPOLLHUP, as an unplug does. Any ioctl can be made to block until the test lets it go (<see cref="Block"/>).
/// Thread-safe: the device calls it from the loop and from its worker.
/// </summary>
internal sealed unsafe class FakeUsbfsFile : IUsbfsFile
{
    private readonly Lock _lock = new();
    private readonly List<nint> _pending = new();
    private readonly Queue<Completion> _completed = new();
    private readonly List<string> _calls = new();
    private readonly List<FakeGate> _gates = new();
    private readonly SafeFileHandle _readEnd;
    private readonly string? _name;
    private readonly List<string>? _journal;
    private int _writeEnd;

    /// <param name="name">Prefix for <paramref name="journal"/> lines.</param>
    /// <param name="journal">A list shared by several fakes, to check the order of ioctls across nodes ("hub: release_port 2").</param>
    public FakeUsbfsFile(string? name = null, List<string>? journal = null)
    {
        _name = name;
        _journal = journal;
        int* fds = stackalloc int[2];
        if (LibC.pipe2(fds, LibC.O_CLOEXEC | LibC.O_NONBLOCK) != 0)
        {
            throw new IOException("pipe2 failed");
        }
        _readEnd = new SafeFileHandle(fds[0], ownsHandle: true);
        _writeEnd = fds[1];
    }

    public SafeHandle Handle => _readEnd;

    /// <summary>Every ioctl so far in order, e.g. "disconnect_claim 0 2 usbfs", "release 1", "setconfig 2" (a snapshot).</summary>
    public string[] Calls
    {
        get
        {
            lock (_lock)
            {
                return [.. _calls];
            }
        }
    }

    public int Speed { get; set; } = 3;

    public uint Caps { get; set; } = 0xFD;

    /// <summary>Result of the next SUBMITURB (0 = accept).</summary>
    public int NextSubmitResult { get; set; }

    public bool DisconnectClaimUnsupported { get; set; }

    public Dictionary<int, int> ClaimResults { get; } = new();

    public Action<int>? OnSetConfiguration { get; set; }

    /// <summary>What USBDEVFS_CONNECT returns: the kernel gives device_attach()'s 1 when a driver was bound.</summary>
    public int ConnectResult { get; set; } = 1;

    /// <summary>What CLAIM_PORT returns (-EBUSY: another program owns the port).</summary>
    public int ClaimPortResult { get; set; }

    /// <summary>What CONNINFO_EX returns; -ENOTTY (an old kernel) by default, i.e. no answer.</summary>
    public int ConnInfoResult { get; set; } = -UsbDevFs.ENOTTY;

    public int ConnBusNum { get; set; }

    public int ConnDevNum { get; set; }

    public bool Unplugged { get; private set; }

    public bool Disposed { get; private set; }

    public int PendingCount
    {
        get
        {
            lock (_lock)
            {
                return _pending.Count;
            }
        }
    }

    /// <summary>URBs completed (or killed) and not reaped.</summary>
    public int CompletedCount
    {
        get
        {
            lock (_lock)
            {
                return _completed.Count;
            }
        }
    }

    public usbdevfs_urb* PendingAt(int i)
    {
        lock (_lock)
        {
            return (usbdevfs_urb*)_pending[i];
        }
    }

    public void ClearCalls()
    {
        lock (_lock)
        {
            _calls.Clear();
        }
    }

    /// <summary>The next ioctl whose call text starts with <paramref name="callPrefix"/> blocks until the gate is released.</summary>
    public FakeGate Block(string callPrefix)
    {
        var gate = new FakeGate(callPrefix);
        lock (_lock)
        {
            _gates.Add(gate);
        }
        return gate;
    }

    /// <summary>The "HC" finishes a pending URB: it waits on the completed list; its results reach user memory at reap.</summary>
    public void CompleteUrb(usbdevfs_urb* urb, int status, int actualLength, ReadOnlySpan<byte> inData = default)
    {
        lock (_lock)
        {
            if (!_pending.Remove((nint)urb))
            {
                throw new InvalidOperationException("not pending");
            }
            _completed.Enqueue(new Completion((nint)urb, status, actualLength, inData.ToArray()));
        }
    }

    /// <summary>Unplug: every pending URB is killed with <paramref name="killStatus"/>, then POLLHUP.</summary>
    public void Unplug(int killStatus = -108)
    {
        lock (_lock)
        {
            Unplugged = true;
            foreach (nint p in _pending)
            {
                _completed.Enqueue(new Completion(p, killStatus, 0, []));
            }
            _pending.Clear();
        }
        HangUp();
    }

    /// <summary>Every ioctl from now on answers ENODEV, with no POLLHUP.</summary>
    public void FailWithEnodev()
    {
        lock (_lock)
        {
            Unplugged = true;
        }
    }

    /// <summary>POLLHUP without touching the URB lists (a device that lost URBs).</summary>
    public void HangUp()
    {
        int fd = Interlocked.Exchange(ref _writeEnd, -1);
        if (fd >= 0)
        {
            LibC.close(fd);
        }
    }

    public int SubmitUrb(usbdevfs_urb* urb)
    {
        Enter($"submit {urb->type} 0x{urb->endpoint:x2}");
        lock (_lock)
        {
            if (Unplugged)
            {
                return -UsbDevFs.ENODEV;
            }
            if (NextSubmitResult != 0)
            {
                int rc = NextSubmitResult;
                NextSubmitResult = 0;
                return rc;
            }
            if (_pending.Contains((nint)urb))
            {
                throw new InvalidOperationException("the same usbdevfs_urb submitted twice");
            }
            _pending.Add((nint)urb);
            return 0;
        }
    }

    public int DiscardUrb(usbdevfs_urb* urb)
    {
        Enter("discard");
        lock (_lock)
        {
            if (Unplugged)
            {
                return -UsbDevFs.ENODEV;
            }
            if (!_pending.Remove((nint)urb))
            {
                return -UsbDevFs.EINVAL;
            }
            _completed.Enqueue(new Completion((nint)urb, -UsbDevFs.ENOENT, 0, []));
            return 0;
        }
    }

    public int ReapUrbNoDelay(out usbdevfs_urb* urb)
    {
        lock (_lock)
        {
            if (_completed.TryDequeue(out Completion c))
            {
                urb = (usbdevfs_urb*)c.Urb;
                // devio.c processcompl: data, status and actual_length reach user memory now.
                urb->status = c.Status;
                urb->actual_length = c.ActualLength;
                int offset = urb->type == UsbDevFs.USBDEVFS_URB_TYPE_CONTROL ? 8 : 0;
                c.Data.CopyTo(new Span<byte>((byte*)urb->buffer + offset, urb->buffer_length - offset));
                return 0;
            }
            urb = null;
            return Unplugged ? -UsbDevFs.ENODEV : -UsbDevFs.EAGAIN;
        }
    }

    public int ClaimInterface(int interfaceNumber) => Record($"claim {interfaceNumber}", ClaimResults.GetValueOrDefault(interfaceNumber));

    // RELEASEINTERFACE kills that interface's URBs; the fake has no endpoint map, so it kills none.
    public int ReleaseInterface(int interfaceNumber) => Record($"release {interfaceNumber}", 0);

    public int DisconnectClaim(int interfaceNumber, uint flags, string driver) => DisconnectClaimUnsupported
        ? Record($"disconnect_claim {interfaceNumber} {flags} {driver}", -UsbDevFs.ENOTTY)
        : Record($"disconnect_claim {interfaceNumber} {flags} {driver}", ClaimResults.GetValueOrDefault(interfaceNumber));

    public int DisconnectDriver(int interfaceNumber) => Record($"disconnect {interfaceNumber}", 0);

    public int ConnectDriver(int interfaceNumber) => Record($"connect {interfaceNumber}", ConnectResult);

    public int SetConfiguration(int configurationValue)
    {
        int rc = Record($"setconfig {configurationValue}", 0);
        OnSetConfiguration?.Invoke(configurationValue);
        return rc;
    }

    public int SetInterface(int interfaceNumber, int alternateSetting) => Record($"setinterface {interfaceNumber} {alternateSetting}", 0);

    public int ClearHalt(int endpoint) => Record($"clear_halt 0x{endpoint:x2}", 0);

    public int Reset() => Record("reset", 0);

    public int ClaimPort(int port) => Record($"claim_port {port}", ClaimPortResult);

    public int ReleasePort(int port) => Record($"release_port {port}", 0);

    public int GetConnInfo(out int busNum, out int devNum)
    {
        busNum = ConnBusNum;
        devNum = ConnDevNum;
        lock (_lock)
        {
            return Unplugged ? -UsbDevFs.ENODEV : ConnInfoResult;
        }
    }

    public int GetSpeed() => Speed;

    public int GetCapabilities(out uint capabilities)
    {
        capabilities = Caps;
        return 0;
    }

    public void Dispose()
    {
        Enter("close");
        lock (_lock)
        {
            if (Disposed)
            {
                return;
            }
            Disposed = true;
        }
        HangUp();
        _readEnd.Dispose();
    }

    private int Record(string call, int result)
    {
        Enter(call);
        lock (_lock)
        {
            return Unplugged ? -UsbDevFs.ENODEV : result;
        }
    }

    // Records the call, then waits (outside the lock, so the loop's ioctls go on) if a gate is set for it.
    private void Enter(string call)
    {
        FakeGate? gate;
        lock (_lock)
        {
            _calls.Add(call);
            gate = _gates.Find(g => call.StartsWith(g.Prefix, StringComparison.Ordinal));
            if (gate is not null)
            {
                _gates.Remove(gate);
            }
        }
        if (_journal is not null)
        {
            lock (_journal)
            {
                _journal.Add($"{_name}: {call}");
            }
        }
        gate?.Pass();
    }

    private readonly record struct Completion(nint Urb, int Status, int ActualLength, byte[] Data);
}

/// <summary>Holds one ioctl of a <see cref="FakeUsbfsFile"/> inside the "kernel" until released.</summary>
internal sealed class FakeGate(string prefix) : IDisposable
{
    private readonly ManualResetEventSlim _entered = new();
    private readonly ManualResetEventSlim _released = new();

    public string Prefix { get; } = prefix;

    public bool IsEntered => _entered.IsSet;

    /// <summary>Waits until the blocked ioctl has been made.</summary>
    public bool WaitEntered(TimeSpan timeout) => _entered.Wait(timeout);

    public void Release() => _released.Set();

    public void Dispose()
    {
        _released.Set();
    }

    internal void Pass()
    {
        _entered.Set();
        _released.Wait();
    }
}
