namespace XenPvUsb.Simulation.Devices;

/// <summary>
/// The Linux URB status values the emulated devices complete transfers with (negative errno, x86_64
/// numbering), so results read exactly like a usbfs reap on real hardware.
/// </summary>
public static class UrbStatus
{
    public const int Success = 0;

    /// <summary>-ENOENT: killed (Cancel/release), or endpoint not in the active configuration at submit.</summary>
    public const int Enoent = -2;

    /// <summary>-EFAULT: the transfer's memory does not hold what it describes (isochronous packets beyond the buffer).</summary>
    public const int Efault = -14;

    /// <summary>-EXDEV: an isochronous packet that was not transferred (missed its frame, or the transfer was cut off).</summary>
    public const int Exdev = -18;

    /// <summary>-ENODEV: the device has been unplugged.</summary>
    public const int Enodev = -19;

    /// <summary>-EINVAL: malformed transfer (bad endpoint address, type mismatch, buffer too short).</summary>
    public const int Einval = -22;

    /// <summary>-EPIPE: the endpoint stalled (control: request not supported).</summary>
    public const int Epipe = -32;

    /// <summary>-EPROTO: no answer from the device (or bit stuffing) in a packet.</summary>
    public const int Eproto = -71;

    /// <summary>-EOVERFLOW: babble, the device sent more than the buffer holds.</summary>
    public const int Eoverflow = -75;

    /// <summary>-EMSGSIZE: an isochronous packet longer than the endpoint's wMaxPacketSize (times its high-bandwidth multiplier).</summary>
    public const int Emsgsize = -90;

    /// <summary>-ESHUTDOWN: endpoint disabled under the transfer (configuration change or reset).</summary>
    public const int Eshutdown = -108;

    /// <summary>-EHOSTUNREACH: request needs a configured device.</summary>
    public const int Ehostunreach = -113;

    /// <summary>-EREMOTEIO: short IN transfer with ShortNotOk.</summary>
    public const int Eremoteio = -121;
}
