using System.Text;
using XenPvUsb.Host;

namespace XenPvUsb.Usb.Usbfs;

/// <summary>
/// A kernel uevent about a USB device (DEVTYPE=usb_device), parsed from a NETLINK_KOBJECT_UEVENT
/// datagram: "ACTION@DEVPATH\0" then "KEY=VALUE\0"... (host-interfaces.md §2.4, lib/kobject_uevent.c).
/// </summary>
/// <param name="Action">ACTION: add, remove, bind, unbind, change, ...</param>
/// <param name="BusId">The last component of DEVPATH (e.g. "1-2.3", or "usb1" for a root hub).</param>
/// <param name="Driver">DRIVER, present on bind/unbind.</param>
/// <param name="DevNum">DEVNUM (the device's number on its bus, as in /dev/bus/usb/BBB/DDD), 0 if absent.</param>
internal readonly record struct UsbUevent(string Action, string BusId, string? Driver, int DevNum = 0)
{
    private const int MaxKeys = 64;

    /// <summary>
    /// Parses a datagram. Returns false for anything that is not a well-formed kernel uevent for a
    /// usb_device (interfaces, other subsystems, udev's "libudev" re-broadcasts, junk).
    /// </summary>
    public static bool TryParse(ReadOnlySpan<byte> datagram, out UsbUevent uevent)
    {
        uevent = default;
        int headerEnd = datagram.IndexOf((byte)0);
        if (headerEnd <= 0)
        {
            return false;
        }
        ReadOnlySpan<byte> header = datagram[..headerEnd];
        int at = header.IndexOf((byte)'@');
        if (at <= 0)
        {
            // udev's monitor header ("libudev\0" + binary) has no '@'.
            return false;
        }

        ReadOnlySpan<byte> action = default;
        ReadOnlySpan<byte> devPath = default;
        ReadOnlySpan<byte> subsystem = default;
        ReadOnlySpan<byte> devType = default;
        ReadOnlySpan<byte> driver = default;
        bool hasDriver = false;
        int devNum = 0;
        ReadOnlySpan<byte> rest = datagram[(headerEnd + 1)..];
        for (int keys = 0; !rest.IsEmpty && keys < MaxKeys; keys++)
        {
            int end = rest.IndexOf((byte)0);
            ReadOnlySpan<byte> pair = end < 0 ? rest : rest[..end];
            rest = end < 0 ? [] : rest[(end + 1)..];
            int eq = pair.IndexOf((byte)'=');
            if (eq <= 0)
            {
                continue;
            }
            ReadOnlySpan<byte> key = pair[..eq];
            ReadOnlySpan<byte> value = pair[(eq + 1)..];
            if (key.SequenceEqual("ACTION"u8))
            {
                action = value;
            }
            else if (key.SequenceEqual("DEVPATH"u8))
            {
                devPath = value;
            }
            else if (key.SequenceEqual("SUBSYSTEM"u8))
            {
                subsystem = value;
            }
            else if (key.SequenceEqual("DEVTYPE"u8))
            {
                devType = value;
            }
            else if (key.SequenceEqual("DRIVER"u8))
            {
                driver = value;
                hasDriver = true;
            }
            else if (key.SequenceEqual("DEVNUM"u8))
            {
                devNum = ParseDecimal(value);
            }
        }

        if (!subsystem.SequenceEqual("usb"u8) || !devType.SequenceEqual("usb_device"u8) || action.IsEmpty)
        {
            return false;
        }
        if (devPath.IsEmpty)
        {
            devPath = header[(at + 1)..];
        }
        int slash = devPath.LastIndexOf((byte)'/');
        string busId = Encoding.ASCII.GetString(devPath[(slash + 1)..]);
        if (!UsbSysfs.IsValidBusId(busId))
        {
            return false;
        }
        uevent = new UsbUevent(
            Encoding.ASCII.GetString(action),
            busId,
            hasDriver ? Encoding.ASCII.GetString(driver) : null,
            devNum);
        return true;
    }

    // DEVNUM is "%03d" (usb_dev_uevent); anything else reads as 0 (unknown).
    private static int ParseDecimal(ReadOnlySpan<byte> text)
    {
        int value = 0;
        if (text.IsEmpty || text.Length > 4)
        {
            return 0;
        }
        foreach (byte b in text)
        {
            if (b < '0' || b > '9')
            {
                return 0;
            }
            value = (value * 10) + (b - '0');
        }
        return value;
    }
}
