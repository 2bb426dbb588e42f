using Tmds.Linux;

namespace XenPvUsb.Interop.Linux;

/// <summary>eventfd(2) helpers over Tmds.LibC: a counter fd used as a wake-up signal.</summary>
internal static unsafe class EventFd
{
    public static int Create()
    {
        int fd = LibC.eventfd(0, LibC.EFD_CLOEXEC | LibC.EFD_NONBLOCK);
        if (fd < 0)
        {
            throw new IOException($"eventfd failed: errno {LibC.errno}");
        }
        return fd;
    }

    /// <summary>Adds one to the counter; the fd becomes readable.</summary>
    public static void Signal(int fd)
    {
        ulong one = 1;
        while ((long)LibC.write(fd, &one, 8) < 0 && LibC.errno == LibC.EINTR)
        {
        }
    }

    /// <summary>Reads and clears the counter. Returns false if it was zero.</summary>
    public static bool Drain(int fd)
    {
        ulong value;
        long n;
        do
        {
            n = (long)LibC.read(fd, &value, 8);
        }
        while (n < 0 && LibC.errno == LibC.EINTR);
        return n == 8;
    }

    public static void Close(int fd)
    {
        if (fd >= 0)
        {
            LibC.close(fd);
        }
    }
}
