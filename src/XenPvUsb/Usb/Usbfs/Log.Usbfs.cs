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

    [LoggerMessage(EventId = 311, Level = LogLevel.Warning, Message = "uevent socket overflowed (ENOBUFS): USB hotplug events were lost")]
    public static partial void HotplugOverflow(this ILogger logger);

    [LoggerMessage(EventId = 312, Level = LogLevel.Debug, Message = "uevent {Action} {BusId}")]
    public static partial void HotplugUevent(this ILogger logger, string action, string busId);

    [LoggerMessage(EventId = 313, Level = LogLevel.Error, Message = "uevent socket receive failed: errno {Errno}; USB hotplug stopped")]
    public static partial void HotplugReceiveFailed(this ILogger logger, int errno);

    [LoggerMessage(EventId = 314, Level = LogLevel.Information, Message = "usb {BusId}: plugged in (uevent {Action})")]
    public static partial void HotplugArrived(this ILogger logger, string busId, string action);

    [LoggerMessage(EventId = 315, Level = LogLevel.Information, Message = "usb {BusId}: gone (uevent {Action})")]
    public static partial void HotplugLeft(this ILogger logger, string busId, string action);
}
