using Microsoft.Extensions.Logging;

namespace XenPvUsb.Simulation;

internal static partial class Log
{
    [LoggerMessage(EventId = 900, Level = LogLevel.Error, Message = "vusb frontend dom{DomId}/{DevId}: protocol error: {Error}")]
    public static partial void FrontendProtocolError(this ILogger logger, int domId, int devId, string error);

    [LoggerMessage(EventId = 909, Level = LogLevel.Error, Message = "vusb frontend dom{DomId}/{DevId}: the backend never answered the URBs in flight; the real xen-hcd would hang in usb_remove_hcd here")]
    public static partial void FrontendHungOnRemoval(this ILogger logger, int domId, int devId);

    [LoggerMessage(EventId = 901, Level = LogLevel.Information, Message = "guest {Guest}: vusb-{DevId}: Xen USB{UsbVer}.0 virtual host controller, {Ports} ports")]
    public static partial void GuestControllerUp(this ILogger logger, string guest, int devId, int usbVer, int ports);

    [LoggerMessage(EventId = 902, Level = LogLevel.Information, Message = "guest {Guest}: vusb-{DevId} port {Port}: new USB device {Vendor:x4}:{Product:x4} {Name}, {Speed} speed")]
    public static partial void GuestDeviceFound(this ILogger logger, string guest, int devId, int port, ushort vendor, ushort product, string name, string speed);

    [LoggerMessage(EventId = 903, Level = LogLevel.Information, Message = "guest {Guest}: vusb-{DevId} port {Port}: USB disconnect")]
    public static partial void GuestDeviceGone(this ILogger logger, string guest, int devId, int port);

    [LoggerMessage(EventId = 904, Level = LogLevel.Warning, Message = "guest {Guest}: vusb-{DevId}: {Error}")]
    public static partial void GuestProbeFailed(this ILogger logger, string guest, int devId, string error);
}
