namespace XenPvUsb.Usb;

/// <summary>A host USB device could not be opened, claimed or driven.</summary>
public sealed class UsbDeviceException : Exception
{
    public UsbDeviceException(string message, int errno = 0) : base(message)
    {
        Errno = errno;
    }

    public UsbDeviceException(string message, Exception inner) : base(message, inner)
    {
    }

    /// <summary>The errno behind the failure, 0 if none.</summary>
    public int Errno { get; }

    /// <summary>EBUSY: another program (or a hand-back in progress) holds the device.</summary>
    public bool IsBusy => Errno == 16;
}
