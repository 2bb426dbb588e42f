using System.Globalization;
using Microsoft.Extensions.Logging;
using XenPvUsb.Host;
using XenPvUsb.Logging;
using static XenPvUsb.Interop.Linux.UsbDevFs;

namespace XenPvUsb.Usb.Usbfs;

/// <summary>
/// Giving a device back to dom0's drivers once its port claim is gone (a probe on an owned port is
/// refused, driver.c usb_probe_interface, so the claim must be released first). Runs on a worker thread:
/// USBDEVFS_CONNECT runs the driver's probe, SETCONFIGURATION probes every new interface.
/// </summary>
internal static class UsbfsHandBack
{
    /// <summary>
    /// A device the kernel left unconfigured (one that enumerated while its port was claimed: generic_probe
    /// does not choose a configuration for an owned device) gets its first configuration, as usb_choose_configuration
    /// picks for nearly every device, and the kernel binds drivers to the new interfaces; otherwise each interface
    /// in <paramref name="interfaces"/> (null: every interface of the active configuration without a driver) is
    /// offered to the drivers with USBDEVFS_CONNECT. Returns how many interfaces got a driver (or -1 when a
    /// configuration was set: the kernel then binds what it finds and does not say).
    /// </summary>
    public static int Reattach(IUsbfsFile file, string sysfsRoot, string busId, IReadOnlyList<int>? interfaces, UsbfsWorker worker, ILogger logger)
    {
        int? configuration = UsbSysfs.ReadConfigurationValue(sysfsRoot, busId);
        if (configuration is null)
        {
            return 0;
        }
        if (configuration == 0)
        {
            int value = FirstConfigurationValue(sysfsRoot, busId);
            worker.Step("SETCONFIGURATION", value);
            int rc = file.SetConfiguration(value);
            logger.UsbfsConfiguredForDom0(busId, value, rc);
            return -1;
        }
        if (interfaces is null)
        {
            var unbound = new List<int>();
            foreach (UsbInterfaceInfo iface in UsbSysfs.ReadInterfaces(sysfsRoot, busId))
            {
                if (iface.Driver is null)
                {
                    unbound.Add(iface.Number);
                }
            }
            interfaces = unbound;
        }
        int bound = 0;
        foreach (int n in interfaces)
        {
            worker.Step("CONNECT", n);
            // USBDEVFS_CONNECT returns device_attach()'s result: 1 = a driver was bound, 0 = none wanted the interface.
            int rc = file.ConnectDriver(n);
            if (rc > 0)
            {
                bound++;
            }
            else if (rc < 0 && rc != -EBUSY)
            {
                // EBUSY: a driver is bound already. ENOENT/EINVAL: that interface is not in the current configuration.
                logger.UsbfsReconnectFailed(busId, n, -rc);
            }
        }
        return bound;
    }

    /// <summary>
    /// bConfigurationValue of the device's first configuration, from sysfs "descriptors" (the device descriptor,
    /// then each configuration descriptor, §2.2); 1 if it cannot be read.
    /// </summary>
    public static int FirstConfigurationValue(string sysfsRoot, string busId)
    {
        const int DeviceDescriptorSize = 18;
        Span<byte> head = stackalloc byte[DeviceDescriptorSize + 9];
        try
        {
            using var stream = new FileStream(Path.Combine(sysfsRoot, "bus", "usb", "devices", busId, "descriptors"), FileMode.Open, FileAccess.Read, FileShare.ReadWrite, bufferSize: 1);
            int read = 0;
            while (read < head.Length)
            {
                int n = stream.Read(head[read..]);
                if (n == 0)
                {
                    break;
                }
                read += n;
            }
            // bLength, bDescriptorType (2 = CONFIGURATION), wTotalLength, bNumInterfaces, bConfigurationValue.
            if (read == head.Length && head[DeviceDescriptorSize + 1] == 2 && head[DeviceDescriptorSize + 5] != 0)
            {
                return head[DeviceDescriptorSize + 5];
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
        return 1;
    }

    /// <summary>
    /// The hub port a device hangs off: "3-1.4" is port 4 of hub "3-1", "3-1" port 1 of root hub "usb3" (the kernel's
    /// naming, §2.1). False for a root hub or a malformed bus id.
    /// </summary>
    public static bool TryGetParentPort(string busId, out string hubBusId, out int port)
    {
        hubBusId = "";
        port = 0;
        if (!UsbSysfs.IsValidBusId(busId) || busId.StartsWith("usb", StringComparison.Ordinal))
        {
            return false;
        }
        int dot = busId.LastIndexOf('.');
        int dash = busId.IndexOf('-', StringComparison.Ordinal);
        ReadOnlySpan<char> last = dot >= 0 ? busId.AsSpan(dot + 1) : busId.AsSpan(dash + 1);
        port = int.Parse(last, NumberStyles.None, CultureInfo.InvariantCulture);
        hubBusId = dot >= 0 ? busId[..dot] : string.Concat("usb", busId.AsSpan(0, dash));
        return true;
    }
}
