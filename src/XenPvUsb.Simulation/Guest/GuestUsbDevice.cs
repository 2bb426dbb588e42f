using System.Buffers.Binary;
using System.Text;
using XenPvUsb.Usb;
using XenPvUsb.Usbif;

namespace XenPvUsb.Simulation.Guest;

/// <summary>
/// The guest's view of one device on a virtual root port, enumerated the way usbcore does it over
/// the urb ring: GET_DESCRIPTOR(device, 8) at address 0, SET_ADDRESS, the full device and
/// configuration descriptors, the product strings, SET_CONFIGURATION.
/// </summary>
public sealed class GuestUsbDevice
{
    // bmAttributes transfer type numbering (USB 2.0 table 9-13) differs from the pipe's.
    private static readonly UsbTransferType[] s_descriptorTypes = [UsbTransferType.Control, UsbTransferType.Isochronous, UsbTransferType.Bulk, UsbTransferType.Interrupt];

    private readonly SimulatedFrontend _frontend;
    private readonly List<GuestEndpoint> _endpoints = new();
    private readonly List<string> _warnings = new();

    private GuestUsbDevice(SimulatedFrontend frontend, int port)
    {
        _frontend = frontend;
        Port = port;
    }

    public int Port { get; }

    public int Address { get; private set; }

    public int Speed { get; private set; }

    public ushort VendorId { get; private set; }

    public ushort ProductId { get; private set; }

    public byte DeviceClass { get; private set; }

    public byte InterfaceClass { get; private set; }

    public byte InterfaceSubClass { get; private set; }

    public byte InterfaceProtocol { get; private set; }

    public int MaxPacketSize0 { get; private set; }

    public string? Manufacturer { get; private set; }

    public string? Product { get; private set; }

    public string? Serial { get; private set; }

    public byte ConfigurationValue { get; private set; }

    public IReadOnlyList<GuestEndpoint> Endpoints => _endpoints;

    /// <summary>What Linux's usbcore would warn about in the descriptors (config.c, hub.c), as it would say it.</summary>
    public IReadOnlyList<string> DescriptorWarnings => _warnings;

    public ushort BcdUsb { get; private set; }

    public string SpeedName => Speed switch
    {
        1 => "low (1.5 Mb/s)",
        2 => "full (12 Mb/s)",
        3 => "high (480 Mb/s)",
        _ => "unknown",
    };

    public static ulong Setup(byte bmRequestType, byte bRequest, ushort wValue, ushort wIndex, ushort wLength) =>
        bmRequestType | ((ulong)bRequest << 8) | ((ulong)wValue << 16) | ((ulong)wIndex << 32) | ((ulong)wLength << 48);

    public static async Task<GuestUsbDevice> EnumerateAsync(SimulatedFrontend frontend, int port, int address, CancellationToken cancellationToken = default)
    {
        var dev = new GuestUsbDevice(frontend, port) { Speed = frontend.PortSpeed(port) };
        byte[] desc = new byte[18];
        await dev.CheckedControlAsync(0x80, 6, 0x0100, 0, desc.AsMemory(0, 8), cancellationToken).ConfigureAwait(false);
        dev.MaxPacketSize0 = desc[7];
        // hub_port_init: at high speed ep0 is 64 bytes, anything else ends the enumeration.
        if (dev.Speed == Usbif.Usbif.USBIF_SPEED_HIGH && dev.MaxPacketSize0 != 64)
        {
            throw new IOException($"port {port}: Invalid ep0 maxpacket: {dev.MaxPacketSize0}");
        }
        await dev.CheckedControlAsync(0x00, 5, (ushort)address, 0, Memory<byte>.Empty, cancellationToken).ConfigureAwait(false);
        dev.Address = address;
        await dev.CheckedControlAsync(0x80, 6, 0x0100, 0, desc, cancellationToken).ConfigureAwait(false);
        dev.DeviceClass = desc[4];
        dev.BcdUsb = BinaryPrimitives.ReadUInt16LittleEndian(desc.AsSpan(2));
        if (desc[7] != dev.MaxPacketSize0)
        {
            dev._warnings.Add($"device descriptor changed: ep0 maxpacket {dev.MaxPacketSize0} then {desc[7]}");
        }
        dev.VendorId = BinaryPrimitives.ReadUInt16LittleEndian(desc.AsSpan(8));
        dev.ProductId = BinaryPrimitives.ReadUInt16LittleEndian(desc.AsSpan(10));
        byte iManufacturer = desc[14];
        byte iProduct = desc[15];
        byte iSerial = desc[16];

        byte[] head = new byte[9];
        await dev.CheckedControlAsync(0x80, 6, 0x0200, 0, head, cancellationToken).ConfigureAwait(false);
        int total = BinaryPrimitives.ReadUInt16LittleEndian(head.AsSpan(2));
        byte[] config = new byte[total];
        int got = await dev.CheckedControlAsync(0x80, 6, 0x0200, 0, config, cancellationToken).ConfigureAwait(false);
        if (got < total || (got >= 4 && BinaryPrimitives.ReadUInt16LittleEndian(config.AsSpan(2)) != total))
        {
            dev._warnings.Add($"config index 0 descriptor too short (expected {total}, got {got}) or its wTotalLength changed");
        }
        dev.ParseConfiguration(config.AsSpan(0, got));

        dev.Manufacturer = await dev.ReadStringAsync(iManufacturer, cancellationToken).ConfigureAwait(false);
        dev.Product = await dev.ReadStringAsync(iProduct, cancellationToken).ConfigureAwait(false);
        dev.Serial = await dev.ReadStringAsync(iSerial, cancellationToken).ConfigureAwait(false);

        await dev.CheckedControlAsync(0x00, 9, dev.ConfigurationValue, 0, Memory<byte>.Empty, cancellationToken).ConfigureAwait(false);
        return dev;
    }

    public Task<UrbResult> ControlAsync(byte bmRequestType, byte bRequest, ushort wValue, ushort wIndex, Memory<byte> data, CancellationToken cancellationToken = default)
    {
        var pipe = UsbifPipe.Create(Port, Address, 0, (bmRequestType & 0x80) != 0, UsbTransferType.Control);
        return _frontend.SubmitAsync(pipe, Setup(bmRequestType, bRequest, wValue, wIndex, (ushort)data.Length), data, cancellationToken: cancellationToken);
    }

    public Task<UrbResult> BulkAsync(byte endpoint, Memory<byte> data, CancellationToken cancellationToken = default) =>
        _frontend.SubmitAsync(UsbifPipe.Create(Port, Address, endpoint & 0x0f, (endpoint & 0x80) != 0, UsbTransferType.Bulk), 0, data, cancellationToken: cancellationToken);

    /// <summary>One bulk URB per buffer, all queued together (usb_sg_init on an HCD without scatter-gather).</summary>
    public Task<UrbResult[]> BulkManyAsync(byte endpoint, IReadOnlyList<Memory<byte>> buffers, bool shortNotOk, CancellationToken cancellationToken = default) =>
        _frontend.SubmitManyAsync(UsbifPipe.Create(Port, Address, endpoint & 0x0f, (endpoint & 0x80) != 0, UsbTransferType.Bulk), buffers, shortNotOk,
            cancellationToken);

    public Task<UrbResult> InterruptAsync(byte endpoint, Memory<byte> data, CancellationToken cancellationToken = default) =>
        _frontend.SubmitAsync(UsbifPipe.Create(Port, Address, endpoint & 0x0f, (endpoint & 0x80) != 0, UsbTransferType.Interrupt), 0, data, cancellationToken: cancellationToken);

    /// <summary>
    /// One isochronous URB, as a class driver builds it (snd-usb-audio, uvcvideo): one packet per length, back to
    /// back in <paramref name="buffer"/>, URB_ISO_ASAP, urb->interval from the endpoint's bInterval as usbcore
    /// normalises it (2^(bInterval-1) frames at full speed, microframes at high speed). The per-packet results
    /// come back as the backend left them in the descriptor pages. usbcore's own checks (the endpoint in the
    /// active alternate setting, packet sizes) are not made here, so a test can send what Linux would refuse.
    /// </summary>
    public Task<IsoUrbResult> IsochronousAsync(byte endpoint, Memory<byte> buffer, IReadOnlyList<int> packetLengths, ushort startFrame = 0,
        CancellationToken cancellationToken = default)
    {
        byte bInterval = 1;
        foreach (GuestEndpoint e in _endpoints)
        {
            if (e.Address == endpoint && e.Type == UsbTransferType.Isochronous)
            {
                bInterval = e.Interval;
                break;
            }
        }
        ushort interval = (ushort)(1 << (Math.Clamp((int)bInterval, 1, 16) - 1));
        var pipe = UsbifPipe.Create(Port, Address, endpoint & 0x0f, (endpoint & 0x80) != 0, UsbTransferType.Isochronous);
        return _frontend.SubmitIsochronousAsync(pipe, buffer, packetLengths, interval, startFrame, cancellationToken: cancellationToken);
    }

    /// <summary>SET_INTERFACE, as usb_set_interface sends it (a streaming driver picks alt 1 to start and alt 0 to stop).</summary>
    public Task<UrbResult> SetInterfaceAsync(byte interfaceNumber, byte alternateSetting, CancellationToken cancellationToken = default) =>
        ControlAsync(0x01, 0x0B, alternateSetting, interfaceNumber, Memory<byte>.Empty, cancellationToken);

    /// <summary>GET_INTERFACE: the alternate setting the device says an interface is in, or -1 if it did not answer.</summary>
    public async Task<int> GetInterfaceAsync(byte interfaceNumber, CancellationToken cancellationToken = default)
    {
        byte[] alt = new byte[1];
        UrbResult r = await ControlAsync(0x81, 0x0A, 0, interfaceNumber, alt, cancellationToken).ConfigureAwait(false);
        return r.Ok && r.ActualLength == 1 ? alt[0] : -1;
    }

    /// <summary>CLEAR_FEATURE(ENDPOINT_HALT), as a class driver does after a stall.</summary>
    public Task<UrbResult> ClearHaltAsync(byte endpoint, CancellationToken cancellationToken = default) =>
        ControlAsync(0x02, 1, 0, endpoint, Memory<byte>.Empty, cancellationToken);

    public GuestEndpoint? FindEndpoint(UsbTransferType type, bool isIn)
    {
        foreach (GuestEndpoint e in _endpoints)
        {
            if (e.Type == type && e.IsIn == isIn)
            {
                return e;
            }
        }
        return null;
    }

    private async Task<int> CheckedControlAsync(byte bmRequestType, byte bRequest, ushort wValue, ushort wIndex, Memory<byte> data, CancellationToken cancellationToken)
    {
        UrbResult r = await ControlAsync(bmRequestType, bRequest, wValue, wIndex, data, cancellationToken).ConfigureAwait(false);
        if (!r.Ok)
        {
            throw new IOException($"port {Port}: control request 0x{bmRequestType:x2}/{bRequest} failed with status {r.Status}");
        }
        return r.ActualLength;
    }

    private async Task<string?> ReadStringAsync(byte index, CancellationToken cancellationToken)
    {
        if (index == 0)
        {
            return null;
        }
        byte[] langs = new byte[4];
        UrbResult r = await ControlAsync(0x80, 6, 0x0300, 0, langs, cancellationToken).ConfigureAwait(false);
        if (!r.Ok || r.ActualLength < 4)
        {
            return null;
        }
        ushort lang = BinaryPrimitives.ReadUInt16LittleEndian(langs.AsSpan(2));
        byte[] buf = new byte[255];
        r = await ControlAsync(0x80, 6, (ushort)(0x0300 | index), lang, buf, cancellationToken).ConfigureAwait(false);
        if (!r.Ok || r.ActualLength < 2)
        {
            return null;
        }
        int len = Math.Min(buf[0], r.ActualLength);
        return Encoding.Unicode.GetString(buf, 2, Math.Max(0, len - 2) & ~1);
    }

    private void ParseConfiguration(ReadOnlySpan<byte> config)
    {
        ConfigurationValue = config.Length > 5 ? config[5] : (byte)1;
        bool firstInterface = true;
        for (int i = 0; i + 2 <= config.Length && config[i] >= 2; i += config[i])
        {
            byte type = config[i + 1];
            if (type == 4 && i + 9 <= config.Length && firstInterface)
            {
                InterfaceClass = config[i + 5];
                InterfaceSubClass = config[i + 6];
                InterfaceProtocol = config[i + 7];
                firstInterface = false;
            }
            else if (type == 5 && i + 7 <= config.Length)
            {
                var e = new GuestEndpoint(config[i + 2], s_descriptorTypes[config[i + 3] & 3], BinaryPrimitives.ReadUInt16LittleEndian(config.Slice(i + 4)), config[i + 6]);
                _endpoints.Add(e);
                CheckEndpoint(e);
            }
            else if (type is 0x30 or 0x31)
            {
                _warnings.Add($"a SuperSpeed companion descriptor (type 0x{type:x2}) on a device at speed {Speed}");
            }
        }
    }

    // usb_parse_endpoint's checks at high speed.
    private void CheckEndpoint(GuestEndpoint e)
    {
        if (Speed != Usbif.Usbif.USBIF_SPEED_HIGH)
        {
            return;
        }
        int size = e.MaxPacketSize & 0x7ff;
        int mult = (e.MaxPacketSize >> 11) & 3;
        switch (e.Type)
        {
            case UsbTransferType.Bulk when e.MaxPacketSize != 512:
                _warnings.Add($"bulk endpoint 0x{e.Address:X} has invalid maxpacket {e.MaxPacketSize}");
                break;
            case UsbTransferType.Interrupt or UsbTransferType.Isochronous when size > 1024 || mult == 3 || size == 0 && mult != 0:
                _warnings.Add($"endpoint 0x{e.Address:X} has invalid wMaxPacketSize {e.MaxPacketSize}");
                break;
        }
    }
}

/// <summary>An endpoint of any alternate setting; <paramref name="Interval"/> is bInterval as the descriptor has it.</summary>
public readonly record struct GuestEndpoint(byte Address, UsbTransferType Type, ushort MaxPacketSize, byte Interval = 0)
{
    public bool IsIn => (Address & 0x80) != 0;
}
