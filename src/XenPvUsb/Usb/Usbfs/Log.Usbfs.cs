using Microsoft.Extensions.Logging;

namespace XenPvUsb.Logging;

internal static partial class Log
{
    [LoggerMessage(EventId = 300, Level = LogLevel.Information, Message = "usb {BusId}: opened {Path} ({Speed} speed, {Interfaces} interfaces claimed, usbfs capabilities 0x{Capabilities:x})")]
    public static partial void UsbfsOpened(this ILogger logger, string busId, string path, XenPvUsb.Usb.UsbSpeed speed, int interfaces, uint capabilities);

    [LoggerMessage(EventId = 301, Level = LogLevel.Warning, Message = "usb {BusId}: cannot claim interface {Interface}: errno {Errno}")]
    public static partial void UsbfsClaimFailed(this ILogger logger, string busId, int @interface, int errno);

    [LoggerMessage(EventId = 302, Level = LogLevel.Debug, Message = "usb {BusId}: interface {Interface} taken from kernel driver {Driver}")]
    public static partial void UsbfsDriverDetached(this ILogger logger, string busId, int @interface, string driver);

    [LoggerMessage(EventId = 303, Level = LogLevel.Information, Message = "usb {BusId}: device gone; {Pending} transfers completed with -ENODEV")]
    public static partial void UsbfsDeviceGone(this ILogger logger, string busId, int pending);

    [LoggerMessage(EventId = 304, Level = LogLevel.Information, Message = "usb {BusId}: released ({Reconnected} interfaces handed back to kernel drivers)")]
    public static partial void UsbfsReleased(this ILogger logger, string busId, int reconnected);

    [LoggerMessage(EventId = 305, Level = LogLevel.Warning, Message = "usb {BusId}: REAPURBNDELAY failed: errno {Errno}; treating the device as gone")]
    public static partial void UsbfsReapFailed(this ILogger logger, string busId, int errno);

    [LoggerMessage(EventId = 306, Level = LogLevel.Warning, Message = "usb {BusId}: could not hand interface {Interface} back to its kernel driver: errno {Errno}")]
    public static partial void UsbfsReconnectFailed(this ILogger logger, string busId, int @interface, int errno);

    [LoggerMessage(EventId = 307, Level = LogLevel.Error, Message = "usb {BusId}: reaped a URB this device did not submit ({Context}); ignored")]
    public static partial void UsbfsUnknownUrb(this ILogger logger, string busId, nint context);

    [LoggerMessage(EventId = 308, Level = LogLevel.Debug, Message = "usb {BusId}: {Operation}({Argument}) = {Result}")]
    public static partial void UsbfsControlOperation(this ILogger logger, string busId, string operation, int argument, int result);

    [LoggerMessage(EventId = 310, Level = LogLevel.Warning, Message = "USB hotplug unavailable (no uevent socket): {Reason}")]
    public static partial void HotplugUnavailable(this ILogger logger, string reason);

    [LoggerMessage(EventId = 311, Level = LogLevel.Warning, Message = "uevent socket overflowed (ENOBUFS): USB hotplug events were lost; resyncing from sysfs")]
    public static partial void HotplugOverflow(this ILogger logger);

    [LoggerMessage(EventId = 312, Level = LogLevel.Debug, Message = "uevent {Action} {BusId}")]
    public static partial void HotplugUevent(this ILogger logger, string action, string busId);

    [LoggerMessage(EventId = 313, Level = LogLevel.Error, Message = "uevent socket receive failed: errno {Errno}; USB hotplug stopped")]
    public static partial void HotplugReceiveFailed(this ILogger logger, int errno);

    [LoggerMessage(EventId = 314, Level = LogLevel.Information, Message = "usb {BusId}: plugged in (uevent {Action})")]
    public static partial void HotplugArrived(this ILogger logger, string busId, string action);

    [LoggerMessage(EventId = 315, Level = LogLevel.Information, Message = "usb {BusId}: gone (uevent {Action})")]
    public static partial void HotplugLeft(this ILogger logger, string busId, string action);

    [LoggerMessage(EventId = 320, Level = LogLevel.Error, Message = "usb {BusId}: usbfs work failed")]
    public static partial void UsbfsWorkFailed(this ILogger logger, Exception exception, string busId);

    [LoggerMessage(EventId = 321, Level = LogLevel.Warning, Message = "usb {BusId}: {Operation}({Argument}) took {Milliseconds} ms (reported as stuck before: {WasReported})")]
    public static partial void UsbfsSlowOperation(this ILogger logger, string busId, string operation, int argument, long milliseconds, bool wasReported);

    [LoggerMessage(EventId = 322, Level = LogLevel.Warning, Message = "usb {BusId}: {Operation}({Argument}) has not returned after {Milliseconds} ms; only this device waits for it")]
    public static partial void UsbfsOperationStuck(this ILogger logger, string busId, string operation, int argument, long milliseconds);

    [LoggerMessage(EventId = 323, Level = LogLevel.Information, Message = "usb {BusId}: claimed port {Port} of hub {Hub}: no dom0 driver can bind the device while it is assigned")]
    public static partial void UsbfsPortClaimed(this ILogger logger, string busId, int port, string hub);

    [LoggerMessage(EventId = 324, Level = LogLevel.Debug, Message = "usb {BusId}: released port {Port} of hub {Hub}: {Result}")]
    public static partial void UsbfsPortReleased(this ILogger logger, string busId, int port, string hub, int result);

    [LoggerMessage(EventId = 325, Level = LogLevel.Information, Message = "usb {BusId}: took over the port claim {How}")]
    public static partial void UsbfsPortClaimAdopted(this ILogger logger, string busId, string how);

    [LoggerMessage(EventId = 326, Level = LogLevel.Information, Message = "usb {BusId}: port {Port} of hub {Hub} still claimed from before the restart (fd store)")]
    public static partial void UsbfsPortClaimInherited(this ILogger logger, string busId, int port, string hub);

    [LoggerMessage(EventId = 327, Level = LogLevel.Warning, Message = "fd store entry {Name} dropped: {Reason}")]
    public static partial void UsbfsPortClaimStale(this ILogger logger, string name, string reason);

    [LoggerMessage(EventId = 335, Level = LogLevel.Warning, Message = "fd store entry {Name} dropped: hub {Hub} is gone or is another device now")]
    public static partial void UsbfsPortClaimHubChanged(this ILogger logger, string name, string hub);

    [LoggerMessage(EventId = 328, Level = LogLevel.Warning, Message = "usb {BusId}: systemd fd store {Operation} failed: errno {Errno}; the port claim does not survive a restart")]
    public static partial void UsbfsFdStoreFailed(this ILogger logger, string busId, string operation, int errno);

    [LoggerMessage(EventId = 329, Level = LogLevel.Information, Message = "usb {BusId}: device gone; its port stays claimed for {Seconds} s in case it comes back (re-enumeration)")]
    public static partial void UsbfsPortClaimParked(this ILogger logger, string busId, int seconds);

    [LoggerMessage(EventId = 330, Level = LogLevel.Information, Message = "usb {BusId}: handed back to dom0 ({Reason}): port released, {Interfaces} interfaces bound to kernel drivers")]
    public static partial void UsbfsHandedBack(this ILogger logger, string busId, string reason, int interfaces);

    [LoggerMessage(EventId = 331, Level = LogLevel.Warning, Message = "usb {BusId}: hand-back: {Operation} failed: errno {Errno}")]
    public static partial void UsbfsHandBackFailed(this ILogger logger, string busId, string operation, int errno);

    [LoggerMessage(EventId = 332, Level = LogLevel.Information, Message = "usb {BusId}: unconfigured at hand-back; SETCONFIGURATION({Configuration}) = {Result}")]
    public static partial void UsbfsConfiguredForDom0(this ILogger logger, string busId, int configuration, int result);

    [LoggerMessage(EventId = 333, Level = LogLevel.Debug, Message = "usb {BusId}: port claim kept for the next daemon")]
    public static partial void UsbfsPortClaimKept(this ILogger logger, string busId);

    [LoggerMessage(EventId = 334, Level = LogLevel.Debug, Message = "usb {BusId}: disposed; {Pending} transfers completed with -ENODEV, hand-back queued")]
    public static partial void UsbfsAbandoned(this ILogger logger, string busId, int pending);

    [LoggerMessage(EventId = 340, Level = LogLevel.Information, Message = "uevent socket: receive buffer {Bytes} bytes (SO_RCVBUFFORCE)")]
    public static partial void HotplugReceiveBufferForced(this ILogger logger, int bytes);

    [LoggerMessage(EventId = 341, Level = LogLevel.Information, Message = "uevent socket: receive buffer {Bytes} bytes (SO_RCVBUF, capped by net.core.rmem_max; SO_RCVBUFFORCE refused with errno {Errno}: it needs CAP_NET_ADMIN)")]
    public static partial void HotplugReceiveBufferLimited(this ILogger logger, int bytes, int errno);

    [LoggerMessage(EventId = 342, Level = LogLevel.Information, Message = "uevent resync from sysfs: {Added} devices added, {Removed} removed")]
    public static partial void HotplugResynced(this ILogger logger, int added, int removed);

    [LoggerMessage(EventId = 343, Level = LogLevel.Error, Message = "uevent resync from sysfs failed")]
    public static partial void HotplugResyncFailed(this ILogger logger, Exception exception);
}
