namespace XenPvUsb.Usb;

/// <summary>
/// A physical (or emulated) USB device claimed for a guest: every interface is claimed and host
/// drivers are kept off it for as long as this object lives.
/// </summary>
/// <remarks>
/// Threading: <see cref="Submit"/>, <see cref="Cancel"/>, the operations and <see cref="IDisposable.Dispose"/>
/// are called from the owning controller's thread (the event loop), one at a time, and none of them
/// blocks: anything that can take milliseconds (control ioctls, resets, discards that wait, driver
/// rebinds, closing a node with URBs in flight) runs elsewhere, so a device that never answers
/// holds only itself. Completions may arrive on any thread.
///
/// Dispose: every transfer still pending is completed (-ENODEV or -ENOENT) before it returns, so the
/// owner may reuse them at once, and no completion for them comes later. Handing the device back to
/// the host happens after that, off the caller's thread; <see cref="Released"/> says when it is done.
/// </remarks>
public interface IUsbHostDevice : IDisposable
{
    string BusId { get; }

    UsbSpeed Speed { get; }

    /// <summary>
    /// Starts a transfer. It completes exactly once through its owner, inline or later. Errors that
    /// usbfs would return from SUBMITURB are delivered as an immediate completion with that status.
    /// </summary>
    void Submit(UsbTransfer transfer);

    /// <summary>
    /// Asks for a pending transfer to be cancelled (USBDEVFS_DISCARDURB) and returns at once. The transfer
    /// still completes through its owner: with -ENOENT if the cancel caught it, with its own status if it
    /// finished first, and never if the device does not complete cancels (then <see cref="IDisposable.Dispose"/> ends it).
    /// </summary>
    void Cancel(UsbTransfer transfer);

    /// <summary>
    /// The owner will not submit <paramref name="transfer"/> again (it gives its buffers back): drop whatever
    /// the device keeps for it (usbfs: its native URB), so that it can be collected. Not for a pending transfer.
    /// </summary>
    void Forget(UsbTransfer transfer);

    /// <summary>USBDEVFS_SETCONFIGURATION, off the caller's thread. Completes with 0 or a negative errno.</summary>
    Task<int> SetConfigurationAsync(int configurationValue);

    /// <summary>USBDEVFS_SETINTERFACE, off the caller's thread. Completes with 0 or a negative errno.</summary>
    Task<int> SetInterfaceAsync(int interfaceNumber, int alternateSetting);

    /// <summary>USBDEVFS_CLEAR_HALT on an endpoint address (with direction bit). Completes with 0 or a negative errno.</summary>
    Task<int> ClearHaltAsync(byte endpoint);

    /// <summary>USBDEVFS_RESET, off the caller's thread. Completes with 0 or a negative errno.</summary>
    Task<int> ResetAsync();

    /// <summary>
    /// Ends the device's transfers like <see cref="IDisposable.Dispose"/>, then lets go of it without handing it
    /// back to the host: no host driver is bound again, and the device's port stays claimed for a successor
    /// daemon (through systemd's file descriptor store). For a daemon that stops and will be restarted.
    /// </summary>
    void Close();

    /// <summary>
    /// Completes once <see cref="IDisposable.Dispose"/> has handed the device back to the host (claims
    /// released, host drivers bound again where they were, node closed), or gave up on it.
    /// </summary>
    Task Released { get; }
}

