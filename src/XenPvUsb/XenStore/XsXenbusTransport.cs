using System.Threading.Channels;
using Tmds.Linux;
using static Tmds.Linux.LibC;

namespace XenPvUsb.XenStore;

/// <summary>
/// <c>/dev/xen/xenbus</c> (or <c>/proc/xen/xenbus</c>): xenstore wire messages relayed by the dom0 kernel (§3.3).
/// Header + payload must fit in 4096 bytes, so payloads are limited to 4080. Reads may return partial messages.
/// </summary>
/// <remarks>
/// The device has no async I/O, so a dedicated thread blocks in poll() over the device and an eventfd; the
/// eventfd wakes it for shutdown (closing an fd does not wake a blocked read). Writes are complete messages
/// that the kernel forwards without blocking on xenstored, so they are done synchronously.
/// </remarks>
internal sealed class XsXenbusTransport : IXsTransport
{
    private const int ReadChunk = 4096;

    private readonly int _fd;
    private readonly int _wakeFd;
    private readonly Thread _reader;
    private readonly TaskCompletionSource _readerExited = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Channel<byte[]> _chunks = Channel.CreateUnbounded<byte[]>(
        new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
    private ReadOnlyMemory<byte> _current;
    private int _shutdown;
    private int _disposed;

    private XsXenbusTransport(int fd, int wakeFd)
    {
        _fd = fd;
        _wakeFd = wakeFd;
        _reader = new Thread(ReaderThread) { IsBackground = true, Name = "xenbus reader" };
        _reader.Start();
    }

    public int MaxPayload => XsCodec.PayloadMax - XsWireHeader.Size;

    public static unsafe XsXenbusTransport Open(string devicePath)
    {
        int fd;
        byte[] pathBytes = System.Text.Encoding.UTF8.GetBytes(devicePath + "\0");
        fixed (byte* p = pathBytes)
        {
            fd = open(p, O_RDWR | O_CLOEXEC);
        }

        if (fd < 0)
        {
            throw new IOException($"open {devicePath} failed: errno {errno}");
        }

        int wakeFd = eventfd(0, EFD_CLOEXEC);
        if (wakeFd < 0)
        {
            int e = errno;
            _ = close(fd);
            throw new IOException($"eventfd failed: errno {e}");
        }

        return new XsXenbusTransport(fd, wakeFd);
    }

    private unsafe void ReaderThread()
    {
        try
        {
            byte[] buffer = new byte[ReadChunk];
            pollfd* fds = stackalloc pollfd[2];
            while (true)
            {
                fds[0] = new pollfd { fd = _fd, events = POLLIN };
                fds[1] = new pollfd { fd = _wakeFd, events = POLLIN };
                int rv = poll(fds, 2, -1);
                if (rv < 0)
                {
                    if (errno == EINTR)
                    {
                        continue;
                    }

                    _chunks.Writer.TryComplete(new IOException($"poll on xenbus failed: errno {errno}"));
                    return;
                }

                if (fds[1].revents != 0)
                {
                    _chunks.Writer.TryComplete();
                    return;
                }

                if (fds[0].revents == 0)
                {
                    continue;
                }

                ssize_t n;
                fixed (byte* p = buffer)
                {
                    n = read(_fd, p, ReadChunk);
                }

                if (n < 0)
                {
                    int e = errno;
                    if (e == EINTR || e == EAGAIN)
                    {
                        continue;
                    }

                    _chunks.Writer.TryComplete(new IOException($"read from xenbus failed: errno {e}"));
                    return;
                }

                if (n == 0)
                {
                    _chunks.Writer.TryComplete();
                    return;
                }

                _chunks.Writer.TryWrite(buffer.AsSpan(0, (int)n).ToArray());
            }
        }
        finally
        {
            _readerExited.TrySetResult();
        }
    }

    public async ValueTask<int> ReceiveAsync(Memory<byte> buffer, CancellationToken cancellationToken)
    {
        if (_current.IsEmpty)
        {
            if (!await _chunks.Reader.WaitToReadAsync(cancellationToken).ConfigureAwait(false))
            {
                await _chunks.Reader.Completion.ConfigureAwait(false); // rethrows a read error
                return 0;
            }

            _current = _chunks.Reader.TryRead(out byte[]? chunk) ? chunk : ReadOnlyMemory<byte>.Empty;
        }

        int count = Math.Min(buffer.Length, _current.Length);
        _current[..count].CopyTo(buffer);
        _current = _current[count..];
        return count;
    }

    public unsafe ValueTask SendAsync(ReadOnlyMemory<byte> message, CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        ReadOnlySpan<byte> remaining = message.Span;
        while (!remaining.IsEmpty)
        {
            ssize_t n;
            fixed (byte* p = remaining)
            {
                n = write(_fd, p, remaining.Length);
            }

            if (n < 0)
            {
                int e = errno;
                if (e == EINTR)
                {
                    continue;
                }

                throw new IOException($"write to xenbus failed: errno {e}");
            }

            remaining = remaining[(int)n..];
        }

        return ValueTask.CompletedTask;
    }

    public unsafe void Shutdown()
    {
        if (Interlocked.Exchange(ref _shutdown, 1) == 0)
        {
            ulong one = 1;
            _ = write(_wakeFd, &one, sizeof(ulong));
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        Shutdown();
        await _readerExited.Task.ConfigureAwait(false);
        _ = close(_fd);
        _ = close(_wakeFd);
    }
}
