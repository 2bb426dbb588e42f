namespace XenPvUsb.Usb;

/// <summary>
/// A physical (or emulated) USB device claimed for a guest: every interface is claimed and host
/// drivers are detached for as long as this object lives. Disposing completes every transfer still
/// pending (with -ENODEV or -ENOENT), releases the claims and lets the host drivers bind again. All methods are called from one thread at a time (the owning
/// controller's work), except completions, which may arrive on any thread.
/// </summary>
public interface IUsbHostDevice : IDisposable
{
    string BusId { get; }

    UsbSpeed Speed { get; }

    /// <summary>
    /// Starts a transfer. It completes exactly once through its owner, inline or later. Errors that
    /// usbfs would return from SUBMITURB are delivered as an immediate completion with that status.
    /// </summary>
    void Submit(UsbTransfer transfer);

    /// <summary>Cancels a pending transfer (USBDEVFS_DISCARDURB); it completes with -ENOENT if it was still pending.</summary>
    void Cancel(UsbTransfer transfer);

    /// <summary>USBDEVFS_SETCONFIGURATION. Returns 0 or a negative errno.</summary>
    int SetConfiguration(int configurationValue);

    /// <summary>USBDEVFS_SETINTERFACE. Returns 0 or a negative errno.</summary>
    int SetInterface(int interfaceNumber, int alternateSetting);

    /// <summary>USBDEVFS_CLEAR_HALT on an endpoint address (with direction bit). Returns 0 or a negative errno.</summary>
    int ClearHalt(byte endpoint);

    /// <summary>USBDEVFS_RESET. Returns 0 or a negative errno.</summary>
    int Reset();
}
