using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using Tmds.Linux;
using XenPvUsb.Interop.Linux;
using XenPvUsb.Usb.Usbfs;

namespace XenPvUsb.Tests.Usbfs;

/// <summary>
/// An in-memory usbfs node with the kernel's submit/reap/discard semantics (host-interfaces.md §1.5).
/// Its pollable fd is the read end of a pipe: never writable (so EPOLLOUT never fires by itself; tests
/// call the device's handler), and closing the write end raises a real EPOLLHUP, as an unplug does.
/// </summary>
internal sealed unsafe class FakeUsbfsFile : IUsbfsFile
{
    private readonly Lock _lock = new();
    private readonly List<nint> _pending = new();
    private readonly Queue<nint> _completed = new();
    private readonly SafeFileHandle _readEnd;
    private int _writeEnd;

    public FakeUsbfsFile()
    {
        int* fds = stackalloc int[2];
        if (LibC.pipe2(fds, LibC.O_CLOEXEC | LibC.O_NONBLOCK) != 0)
        {
            throw new IOException("pipe2 failed");
        }
        _readEnd = new SafeFileHandle(fds[0], ownsHandle: true);
        _writeEnd = fds[1];
    }

    public SafeHandle Handle => _readEnd;

    /// <summary>Every ioctl in order, e.g. "disconnect_claim 0 2 usbfs", "release 1", "setconfig 2".</summary>
    public List<string> Calls { get; } = new();

    public int Speed { get; set; } = 3;

    public uint Caps { get; set; } = 0xFD;

    /// <summary>Result of the next SUBMITURB (0 = accept).</summary>
    public int NextSubmitResult { get; set; }

    public bool DisconnectClaimUnsupported { get; set; }

    public Dictionary<int, int> ClaimResults { get; } = new();

    public Action<int>? OnSetConfiguration { get; set; }

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

    public usbdevfs_urb* PendingAt(int i)
    {
        lock (_lock)
        {
            return (usbdevfs_urb*)_pending[i];
        }
    }

    /// <summary>The "HC" finishes a pending URB: results written now, handed over at reap.</summary>
    public void CompleteUrb(usbdevfs_urb* urb, int status, int actualLength, ReadOnlySpan<byte> inData = default)
    {
        lock (_lock)
        {
            if (!_pending.Remove((nint)urb))
            {
                throw new InvalidOperationException("not pending");
            }
            urb->status = status;
            urb->actual_length = actualLength;
            int offset = urb->type == UsbDevFs.USBDEVFS_URB_TYPE_CONTROL ? 8 : 0;
            inData.CopyTo(new Span<byte>((byte*)urb->buffer + offset, urb->buffer_length - offset));
            _completed.Enqueue((nint)urb);
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
                ((usbdevfs_urb*)p)->status = killStatus;
                _completed.Enqueue(p);
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
        lock (_lock)
        {
            Calls.Add($"submit {urb->type} 0x{urb->endpoint:x2}");
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
            _pending.Add((nint)urb);
            return 0;
        }
    }

    public int DiscardUrb(usbdevfs_urb* urb)
    {
        lock (_lock)
        {
            Calls.Add("discard");
            if (!_pending.Remove((nint)urb))
            {
                return -UsbDevFs.EINVAL;
            }
            urb->status = -UsbDevFs.ENOENT;
            urb->actual_length = 0;
            _completed.Enqueue((nint)urb);
            return 0;
        }
    }

    public int ReapUrbNoDelay(out usbdevfs_urb* urb)
    {
        lock (_lock)
        {
            if (_completed.TryDequeue(out nint p))
            {
                urb = (usbdevfs_urb*)p;
                return 0;
            }
            urb = null;
            return Unplugged ? -UsbDevFs.ENODEV : -UsbDevFs.EAGAIN;
        }
    }

    public int ClaimInterface(int interfaceNumber) => Record($"claim {interfaceNumber}", ClaimResults.GetValueOrDefault(interfaceNumber));

    public int ReleaseInterface(int interfaceNumber)
    {
        lock (_lock)
        {
            // RELEASEINTERFACE kills that interface's URBs; the fake has no endpoint map, so it kills none.
            Calls.Add($"release {interfaceNumber}");
            return 0;
        }
    }

    public int DisconnectClaim(int interfaceNumber, uint flags, string driver) => DisconnectClaimUnsupported
        ? Record($"disconnect_claim {interfaceNumber} {flags} {driver}", -UsbDevFs.ENOTTY)
        : Record($"disconnect_claim {interfaceNumber} {flags} {driver}", ClaimResults.GetValueOrDefault(interfaceNumber));

    public int DisconnectDriver(int interfaceNumber) => Record($"disconnect {interfaceNumber}", 0);

    /// <summary>What USBDEVFS_CONNECT returns: the kernel gives device_attach()'s 1 when a driver was bound.</summary>
    public int ConnectResult { get; set; } = 1;

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

    public int GetSpeed() => Speed;

    public int GetCapabilities(out uint capabilities)
    {
        capabilities = Caps;
        return 0;
    }

    public void Dispose()
    {
        lock (_lock)
        {
            Calls.Add("close");
            Disposed = true;
        }
        HangUp();
        _readEnd.Dispose();
    }

    private int Record(string call, int result)
    {
        lock (_lock)
        {
            Calls.Add(call);
            return Unplugged ? -UsbDevFs.ENODEV : result;
        }
    }
}
