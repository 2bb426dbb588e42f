using XenPvUsb.Xen;

namespace XenPvUsb.Usb.Usbfs;

/// <summary>Runs teardown work on the event loop thread from any thread, and waits for it.</summary>
internal static class LoopSync
{
    /// <summary>
    /// Runs <paramref name="action"/> on the loop thread: inline if already there, else posted and
    /// waited for. If the loop has stopped (or stops before running it) no handler can run any more,
    /// so the action runs on the caller's thread instead.
    /// </summary>
    public static void Run(EventLoop loop, Action action)
    {
        if (loop.IsLoopThread || loop.Completion.IsCompleted)
        {
            action();
            return;
        }
        Task posted = loop.InvokeAsync(action);
        Task.WaitAny(posted, loop.Completion);
        if (posted.IsCompleted)
        {
            posted.GetAwaiter().GetResult();
            return;
        }
        action();
    }
}
