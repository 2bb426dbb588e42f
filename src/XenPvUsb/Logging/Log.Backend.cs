using Microsoft.Extensions.Logging;

namespace XenPvUsb.Logging;

internal static partial class Log
{
    [LoggerMessage(EventId = 200, Level = LogLevel.Critical, Message = "The event loop failed; the daemon cannot go on")]
    public static partial void EventLoopFailed(this ILogger logger, Exception exception);

    [LoggerMessage(EventId = 206, Level = LogLevel.Error, Message = "{Work} failed on the event loop; it is stopped, the loop goes on")]
    public static partial void HandlerFailed(this ILogger logger, string work, Exception exception);

    [LoggerMessage(EventId = 207, Level = LogLevel.Error, Message = "vusb {DomId}/{DevId}: the controller failed; answering what is in flight and closing it")]
    public static partial void ControllerFailed(this ILogger logger, int domId, int devId, Exception exception);

    [LoggerMessage(EventId = 201, Level = LogLevel.Information, Message = "vusb {DomId}/{DevId}: connected (urb-ring-ref {UrbRef}, conn-ring-ref {ConnRef}, local port {Port})")]
    public static partial void ControllerConnected(this ILogger logger, int domId, int devId, uint urbRef, uint connRef, uint port);

    [LoggerMessage(EventId = 208, Level = LogLevel.Information, Message = "vusb {DomId}/{DevId}: re-adopted from the recovery journal: {InFlight} requests in flight at the predecessor's end answered IOERROR, {Waiting} waiting in the ring")]
    public static partial void ControllerAdopted(this ILogger logger, int domId, int devId, int inFlight, uint waiting);

    [LoggerMessage(EventId = 202, Level = LogLevel.Information, Message = "vusb {DomId}/{DevId}: disconnected")]
    public static partial void ControllerDisconnected(this ILogger logger, int domId, int devId);

    [LoggerMessage(EventId = 203, Level = LogLevel.Debug, Message = "vusb {DomId}/{DevId}: port {Port} event, speed {Speed}")]
    public static partial void PortEventSent(this ILogger logger, int domId, int devId, int port, int speed);

    [LoggerMessage(EventId = 204, Level = LogLevel.Error, Message = "vusb {DomId}/{DevId}: frontend broke the {Ring} protocol (producer index {Prod}); controller stopped")]
    public static partial void RingError(this ILogger logger, int domId, int devId, string ring, uint prod);

    [LoggerMessage(EventId = 205, Level = LogLevel.Debug, Message = "vusb {DomId}/{DevId}: request {Id} on port {Port} refused: {Reason} (status {Status})")]
    public static partial void RequestRejected(this ILogger logger, int domId, int devId, int id, int port, string reason, int status);

    [LoggerMessage(EventId = 210, Level = LogLevel.Error, Message = "vusb {DomId}/{DevId}: unusable controller nodes (num-ports '{NumPorts}', usb-ver '{UsbVer}', frontend '{Frontend}')")]
    public static partial void BackendConfigInvalid(this ILogger logger, int domId, int devId, string? numPorts, string? usbVer, string? frontend);

    [LoggerMessage(EventId = 211, Level = LogLevel.Information, Message = "vusb {DomId}/{DevId}: USB {UsbVer}.0 controller with {NumPorts} ports, grant {GrantMode}, waiting for the frontend")]
    public static partial void BackendInitialised(this ILogger logger, int domId, int devId, int numPorts, int usbVer, XenPvUsb.Backend.GrantMode grantMode);

    [LoggerMessage(EventId = 212, Level = LogLevel.Debug, Message = "vusb {DomId}/{DevId}: state {State}")]
    public static partial void BackendState(this ILogger logger, int domId, int devId, XenPvUsb.Xen.XenbusState state);

    [LoggerMessage(EventId = 213, Level = LogLevel.Error, Message = "vusb {DomId}/{DevId}: frontend nodes unusable (urb-ring-ref '{Urb}', conn-ring-ref '{Conn}', event-channel '{Evtchn}')")]
    public static partial void FrontendNodesInvalid(this ILogger logger, int domId, int devId, string? urb, string? conn, string? evtchn);

    [LoggerMessage(EventId = 214, Level = LogLevel.Error, Message = "vusb {DomId}/{DevId}: cannot connect: {Reason}")]
    public static partial void ConnectFailed(this ILogger logger, int domId, int devId, string reason);

    [LoggerMessage(EventId = 215, Level = LogLevel.Warning, Message = "vusb {DomId}/{DevId}: port {Port} = '{BusId}' refused: {Reason}")]
    public static partial void PortAssignmentRefused(this ILogger logger, int domId, int devId, int port, string busId, string reason);

    [LoggerMessage(EventId = 216, Level = LogLevel.Information, Message = "vusb {DomId}/{DevId}: port {Port} assigned {BusId}, which is not plugged in; waiting for it")]
    public static partial void DeviceAbsent(this ILogger logger, int domId, int devId, int port, string busId);

    [LoggerMessage(EventId = 217, Level = LogLevel.Error, Message = "vusb {DomId}/{DevId}: port {Port}: cannot claim {BusId}: {Reason}")]
    public static partial void DeviceOpenFailed(this ILogger logger, int domId, int devId, int port, string busId, string reason);

    [LoggerMessage(EventId = 218, Level = LogLevel.Information, Message = "vusb {DomId}/{DevId}: port {Port}: {BusId} attached ({Speed} speed)")]
    public static partial void DeviceAttached(this ILogger logger, int domId, int devId, int port, string busId, XenPvUsb.Usb.UsbSpeed speed);

    [LoggerMessage(EventId = 219, Level = LogLevel.Information, Message = "vusb {DomId}/{DevId}: port {Port}: {BusId} detached, handed back to dom0 in {Milliseconds:0} ms")]
    public static partial void DeviceDetached(this ILogger logger, int domId, int devId, int port, string busId, double milliseconds);

    [LoggerMessage(EventId = 220, Level = LogLevel.Error, Message = "vusb {DomId}/{DevId}: xenstore watch failed")]
    public static partial void BackendWatchFailed(this ILogger logger, int domId, int devId, Exception exception);

    [LoggerMessage(EventId = 221, Level = LogLevel.Error, Message = "vusb {DomId}/{DevId}: backend failed; this controller is stopped")]
    public static partial void BackendFailed(this ILogger logger, int domId, int devId, Exception exception);

    [LoggerMessage(EventId = 222, Level = LogLevel.Information, Message = "serving backend/vusb under {Path}")]
    public static partial void RegistryStarted(this ILogger logger, string path);

    [LoggerMessage(EventId = 230, Level = LogLevel.Information,
        Message = "vusb {DomId}/{DevId}: served {Urbs} URBs, {Bytes} bytes ({GrantMode} mode, {Mapped} mapped); per URB: device {DeviceUs:F1} us, grant copy/map {GrantUs:F1} us; {MeanBatch:F2} requests per ring batch; {Merged} bulk requests merged into {MergedTransfers} transfers")]
    public static partial void ControllerStatistics(this ILogger logger, int domId, int devId, XenPvUsb.Backend.GrantMode grantMode, long urbs, long bytes, long mapped,
        double deviceUs, double grantUs, double meanBatch, long merged, long mergedTransfers);

    [LoggerMessage(EventId = 241, Level = LogLevel.Information,
        Message = "vusb {DomId}/{DevId}: counters: urbs={Urbs} bytes={Bytes} requests={Requests} batches={Batches} kicks={Kicks} notifies={Notifies} pushes={Pushes} grant-calls={GrantCalls} grant-segs={GrantSegments} submits={Submits} merged={Merged} merged-transfers={MergedTransfers} device-us={DeviceUs:F0} grant-us={GrantUs:F0}")]
    public static partial void ControllerCounters(this ILogger logger, int domId, int devId, long urbs, long bytes, long requests, long batches,
        long kicks, long notifies, long pushes, long grantCalls, long grantSegments, long submits, long merged, long mergedTransfers,
        double deviceUs, double grantUs);

    [LoggerMessage(EventId = 229, Level = LogLevel.Information, Message = "vusb {DomId}/{DevId}: {Packets} isochronous packets served, {Errors} of them with an error status")]
    public static partial void IsochronousStatistics(this ILogger logger, int domId, int devId, long packets, long errors);

    [LoggerMessage(EventId = 232, Level = LogLevel.Information, Message = "vusb {DomId}/{DevId}: the guest domain is gone; releasing its devices")]
    public static partial void DomainGone(this ILogger logger, int domId, int devId);

    [LoggerMessage(EventId = 233, Level = LogLevel.Information, Message = "vusb {DomId}/{DevId}: removed the controller's xenstore nodes (its domain is gone)")]
    public static partial void ControllerNodesRemoved(this ILogger logger, int domId, int devId);

    [LoggerMessage(EventId = 234, Level = LogLevel.Warning, Message = "vusb {DomId}/{DevId}: the frontend did not close within {Seconds} s of the removal; releasing anyway")]
    public static partial void RemovalForced(this ILogger logger, int domId, int devId, double seconds);

    [LoggerMessage(EventId = 235, Level = LogLevel.Warning, Message = "vusb {DomId}/{DevId}: port {Port}: {BusId} is not handed back after {Seconds} s (the device does not answer); still waiting")]
    public static partial void DeviceReleaseSlow(this ILogger logger, int domId, int devId, int port, string busId, double seconds);

    [LoggerMessage(EventId = 236, Level = LogLevel.Information, Message = "vusb {DomId}/{DevId}: the guest domain does not exist; removing its stale controller, serving nothing")]
    public static partial void StaleController(this ILogger logger, int domId, int devId);

    [LoggerMessage(EventId = 237, Level = LogLevel.Warning, Message = "vusb {DomId}/{DevId}: no recovery journal in {Directory} ({Reason}); a restarted daemon will not be able to take this controller over")]
    public static partial void JournalUnavailable(this ILogger logger, int domId, int devId, string directory, string reason);

    [LoggerMessage(EventId = 238, Level = LogLevel.Warning, Message = "vusb {DomId}/{DevId}: connected, but cannot be re-adopted ({Reason}); serving it afresh")]
    public static partial void AdoptionImpossible(this ILogger logger, int domId, int devId, string reason);

    [LoggerMessage(EventId = 239, Level = LogLevel.Debug, Message = "vusb {DomId}/{DevId}: idle; transfer buffers given back")]
    public static partial void BuffersReleased(this ILogger logger, int domId, int devId);

    [LoggerMessage(EventId = 231, Level = LogLevel.Warning, Message = "vusb {DomId}/{DevId}: backend node grant-mode = '{Value}' is not copy or map; using {Default}")]
    public static partial void GrantModeInvalid(this ILogger logger, int domId, int devId, string value, XenPvUsb.Backend.GrantMode @default);

    [LoggerMessage(EventId = 240, Level = LogLevel.Warning, Message = "vusb {DomId}/{DevId}: port {Port}: {BusId} is a SuperSpeed device whose descriptors ({Length} bytes from sysfs) do not parse; the guest gets them untranslated and may not enumerate it")]
    public static partial void SuperSpeedDescriptorsUnreadable(this ILogger logger, int domId, int devId, int port, string busId, int length);
}
