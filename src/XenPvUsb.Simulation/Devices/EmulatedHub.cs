using XenPvUsb.Usb;

namespace XenPvUsb.Simulation.Devices;

/// <summary>
/// A minimal high-speed 4-port hub (class 9): enough descriptors and hub-class status requests for
/// enumeration and listings. It forwards no traffic; its status-change endpoint never reports.
/// </summary>
public sealed class EmulatedHub : EmulatedUsbDevice
{
    public const ushort DefaultVendorId = 0x1209;
    public const ushort DefaultProductId = 0x5A03;
    public const int PortCount = 4;

    private static readonly byte[] s_hubDescriptor =
    [
        9, 0x29, PortCount,
        0x09, 0x00, // wHubCharacteristics: individual port power switching and over-current protection
        50,         // bPwrOn2PwrGood (100 ms)
        100,        // bHubContrCurrent (mA)
        0x00,       // DeviceRemovable: all removable
        0xFF,       // PortPwrCtrlMask (USB 1.1 compatibility)
    ];

    public EmulatedHub()
        : base(
            UsbSpeed.High,
            UsbDescriptors.Device(0x0200, 0x09, 0x00, 0x01, 64, DefaultVendorId, DefaultProductId, 0x0100, 1, 2, 0),
            UsbDescriptors.Configuration(
                1,
                0,
                0x40,
                0,
                UsbDescriptors.Interface(0, 0, 1, 0x09, 0x00, 0x00),
                UsbDescriptors.Endpoint(0x81, UsbTransferTypeBits.Interrupt, 1, 12)),
            ["XenPvUsb", "Emulated Hub"],
            UsbDescriptors.Configuration(
                1,
                0,
                0x40,
                0,
                UsbDescriptors.Interface(0, 0, 1, 0x09, 0x00, 0x00),
                UsbDescriptors.Endpoint(0x81, UsbTransferTypeBits.Interrupt, 1, 255)))
    {
    }

    public override int MaxChild => PortCount;

    // Nothing ever changes on the emulated ports.
    protected override int OnDataTransferLocked(UsbTransfer transfer, out int actualLength)
    {
        actualLength = 0;
        return Pending;
    }

    protected override int OnControlLocked(UsbSetupPacket setup, Span<byte> data, out int actualLength)
    {
        actualLength = 0;
        scoped ReadOnlySpan<byte> source;
        switch (setup.RequestType, setup.Request)
        {
            case (0xA0, 0x06) when setup.Value >> 8 == 0x29: // GET_DESCRIPTOR(Hub)
                source = s_hubDescriptor;
                break;
            case (0xA0, 0x00) when setup.Index == 0: // GET_STATUS(hub): local power good, no change
            case (0xA3, 0x00) when setup.Index is >= 1 and <= PortCount: // GET_STATUS(port): powered off, nothing connected
                source = [0, 0, 0, 0];
                break;
            case (0x23, 0x03) when setup.Index is >= 1 and <= PortCount: // SET_FEATURE(port)
            case (0x23, 0x01) when setup.Index is >= 1 and <= PortCount: // CLEAR_FEATURE(port)
            case (0x20, 0x01): // CLEAR_FEATURE(hub)
                return UrbStatus.Success;
            default:
                return UrbStatus.Epipe;
        }

        actualLength = Math.Min(source.Length, data.Length);
        source[..actualLength].CopyTo(data);
        return UrbStatus.Success;
    }
}
