using System.Buffers.Binary;
using XenPvUsb.Usb;

namespace XenPvUsb.Simulation.Devices;

/// <summary>
/// A HID boot-protocol keyboard (HID 1.11 appendix B.1): 8-byte input reports on interrupt IN 0x81,
/// one LED output report. <see cref="Type"/> queues key press/release reports; an interrupt IN waits
/// until a report is queued and then completes on the typing thread.
/// </summary>
public sealed class HidKeyboardDevice : EmulatedUsbDevice
{
    public const ushort DefaultVendorId = 0x1209;
    public const ushort DefaultProductId = 0x5A02;
    public const byte InterruptInEndpoint = 0x81;
    public const int ReportSize = 8;

    /// <summary>Left Shift in the modifier byte.</summary>
    public const byte LeftShift = 0x02;

    // HID 1.11 §7.2.4: keyboards default to an idle rate of 500 ms (in 4 ms units).
    private const byte DefaultIdleRate = 125;

    private static readonly byte[] s_reportDescriptor =
    [
        0x05, 0x01, 0x09, 0x06, 0xA1, 0x01,             // Usage Page (Generic Desktop), Usage (Keyboard), Collection (Application)
        0x05, 0x07, 0x19, 0xE0, 0x29, 0xE7,             // Usage Page (Key Codes), Usage Min/Max (modifiers)
        0x15, 0x00, 0x25, 0x01, 0x75, 0x01, 0x95, 0x08, // Logical 0..1, 8 x 1 bit
        0x81, 0x02,                                     // Input (Data, Variable, Absolute): modifier byte
        0x95, 0x01, 0x75, 0x08, 0x81, 0x01,             // Input (Constant): reserved byte
        0x95, 0x05, 0x75, 0x01, 0x05, 0x08,             // 5 x 1 bit, Usage Page (LEDs)
        0x19, 0x01, 0x29, 0x05, 0x91, 0x02,             // Usage Min/Max (LEDs 1..5), Output (Data, Variable, Absolute)
        0x95, 0x01, 0x75, 0x03, 0x91, 0x01,             // Output (Constant): LED padding
        0x95, 0x06, 0x75, 0x08, 0x15, 0x00, 0x25, 0x65, // 6 x 8 bits, Logical 0..101
        0x05, 0x07, 0x19, 0x00, 0x29, 0x65,             // Usage Page (Key Codes), Usage Min/Max 0..101
        0x81, 0x00,                                     // Input (Data, Array): key codes
        0xC0,                                           // End Collection
    ];

    private static readonly byte[] s_hidDescriptor =
        [9, 0x21, 0x11, 0x01, 0x00, 1, 0x22, (byte)s_reportDescriptor.Length, (byte)(s_reportDescriptor.Length >> 8)];

    private static readonly ushort[] s_keyMap = BuildKeyMap();

    private readonly Queue<ulong> _reports = new();
    private ulong _lastReport;
    private byte _leds;
    private byte _idleRate = DefaultIdleRate;
    private byte _protocol = 1;

    /// <param name="speed">Low or Full (default).</param>
    public HidKeyboardDevice(UsbSpeed speed = UsbSpeed.Full)
        : base(
            speed,
            UsbDescriptors.Device(0x0200, 0, 0, 0, 8, DefaultVendorId, DefaultProductId, 0x0100, 1, 2, 3),
            UsbDescriptors.Configuration(
                1,
                0,
                0x20,
                50,
                UsbDescriptors.Interface(0, 0, 1, 0x03, 0x01, 0x01),
                s_hidDescriptor,
                UsbDescriptors.Endpoint(InterruptInEndpoint, UsbTransferTypeBits.Interrupt, ReportSize, 10)),
            ["XenPvUsb", "Emulated Keyboard", "XPK0001"])
    {
        if (speed is not (UsbSpeed.Low or UsbSpeed.Full))
        {
            throw new ArgumentOutOfRangeException(nameof(speed), speed, "A boot keyboard runs at low or full speed.");
        }
    }

    public static ReadOnlySpan<byte> ReportDescriptor => s_reportDescriptor;

    /// <summary>LED output report last set by the host (bit 0 Num Lock, 1 Caps Lock, 2 Scroll Lock).</summary>
    public byte Leds
    {
        get
        {
            lock (SyncRoot)
            {
                return _leds;
            }
        }
    }

    /// <summary>0 boot protocol, 1 report protocol.</summary>
    public byte Protocol
    {
        get
        {
            lock (SyncRoot)
            {
                return _protocol;
            }
        }
    }

    /// <summary>Idle rate in 4 ms units (0 = report only on change). Reports are never repeated by the emulation.</summary>
    public byte IdleRate
    {
        get
        {
            lock (SyncRoot)
            {
                return _idleRate;
            }
        }
    }

    public int QueuedReports
    {
        get
        {
            lock (SyncRoot)
            {
                return _reports.Count;
            }
        }
    }

    /// <summary>True when <paramref name="c"/> can be typed by <see cref="Type"/>.</summary>
    public static bool CanType(char c) => c < s_keyMap.Length && s_keyMap[c] != 0;

    /// <summary>
    /// Queues a press report and a release report per character (printable ASCII, '\n', '\t', '\b').
    /// Waiting interrupt transfers complete on this thread.
    /// </summary>
    public void Type(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        foreach (char c in text)
        {
            if (!CanType(c))
            {
                throw new ArgumentException($"Cannot type U+{(int)c:X4}.", nameof(text));
            }
        }

        lock (SyncRoot)
        {
            foreach (char c in text)
            {
                ushort key = s_keyMap[c];
                _reports.Enqueue((uint)(key >> 8) | ((ulong)(uint)(key & 0xFF) << 16));
                _reports.Enqueue(0);
            }

            DeliverQueuedLocked();
        }

        FlushCompletions();
    }

    /// <summary>Queues one raw 8-byte input report (modifiers, reserved, six key codes).</summary>
    public void SendReport(ReadOnlySpan<byte> report)
    {
        if (report.Length != ReportSize)
        {
            throw new ArgumentException("A boot keyboard report is 8 bytes.", nameof(report));
        }

        lock (SyncRoot)
        {
            _reports.Enqueue(BinaryPrimitives.ReadUInt64LittleEndian(report));
            DeliverQueuedLocked();
        }

        FlushCompletions();
    }

    protected override int OnDataTransferLocked(UsbTransfer transfer, out int actualLength)
    {
        actualLength = 0;
        return _reports.Count == 0 ? Pending : SendReportLocked(transfer, out actualLength);
    }

    protected override int OnControlLocked(UsbSetupPacket setup, Span<byte> data, out int actualLength)
    {
        actualLength = 0;
        if (setup.Index != 0)
        {
            return UrbStatus.Epipe;
        }

        Span<byte> reply = stackalloc byte[ReportSize];
        scoped ReadOnlySpan<byte> source;
        switch (setup.RequestType, setup.Request)
        {
            case (0x81, 0x06) when setup.Value == 0x2200: // GET_DESCRIPTOR(Report)
                source = s_reportDescriptor;
                break;
            case (0x81, 0x06) when setup.Value == 0x2100: // GET_DESCRIPTOR(HID)
                source = s_hidDescriptor;
                break;
            case (0xA1, 0x01) when setup.Value == 0x0100: // GET_REPORT(Input, id 0)
                BinaryPrimitives.WriteUInt64LittleEndian(reply, _lastReport);
                source = reply;
                break;
            case (0xA1, 0x01) when setup.Value == 0x0200: // GET_REPORT(Output, id 0)
                reply[0] = _leds;
                source = reply[..1];
                break;
            case (0x21, 0x09) when setup.Value == 0x0200 && setup.Length >= 1: // SET_REPORT(Output, id 0)
                _leds = data[0];
                actualLength = data.Length;
                return UrbStatus.Success;
            case (0xA1, 0x02) when (setup.Value & 0xFF) == 0: // GET_IDLE
                reply[0] = _idleRate;
                source = reply[..1];
                break;
            case (0x21, 0x0A) when (setup.Value & 0xFF) == 0 && setup.Length == 0: // SET_IDLE
                _idleRate = (byte)(setup.Value >> 8);
                return UrbStatus.Success;
            case (0xA1, 0x03) when setup.Value == 0: // GET_PROTOCOL
                reply[0] = _protocol;
                source = reply[..1];
                break;
            case (0x21, 0x0B) when setup.Value <= 1 && setup.Length == 0: // SET_PROTOCOL
                _protocol = (byte)setup.Value;
                return UrbStatus.Success;
            default:
                return UrbStatus.Epipe;
        }

        actualLength = Math.Min(source.Length, data.Length);
        source[..actualLength].CopyTo(data);
        return UrbStatus.Success;
    }

    protected override void OnResetLocked()
    {
        _protocol = 1;
        _idleRate = DefaultIdleRate;
        _leds = 0;
    }

    private static ushort[] BuildKeyMap()
    {
        ushort[] map = new ushort[128];
        for (int i = 0; i < 26; i++)
        {
            map['a' + i] = (ushort)(0x04 + i);
            map['A' + i] = (ushort)((LeftShift << 8) | (0x04 + i));
        }

        const string digits = "1234567890";
        const string shiftedDigits = "!@#$%^&*()";
        for (int i = 0; i < 10; i++)
        {
            map[digits[i]] = (ushort)(0x1E + i);
            map[shiftedDigits[i]] = (ushort)((LeftShift << 8) | (0x1E + i));
        }

        map['\n'] = 0x28;
        map['\b'] = 0x2A;
        map['\t'] = 0x2B;
        map[' '] = 0x2C;
        const string punctuation = "-=[]\\;'`,./";
        const string shiftedPunctuation = "_+{}|:\"~<>?";
        ReadOnlySpan<byte> usages = [0x2D, 0x2E, 0x2F, 0x30, 0x31, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38];
        for (int i = 0; i < punctuation.Length; i++)
        {
            map[punctuation[i]] = usages[i];
            map[shiftedPunctuation[i]] = (ushort)((LeftShift << 8) | usages[i]);
        }

        return map;
    }

    private void DeliverQueuedLocked()
    {
        while (_reports.Count > 0 && TakePendingLocked(InterruptInEndpoint) is { } waiting)
        {
            int status = SendReportLocked(waiting, out int actualLength);
            CompleteLocked(waiting, status, actualLength);
        }
    }

    private int SendReportLocked(UsbTransfer transfer, out int actualLength)
    {
        ulong report = _reports.Dequeue();
        _lastReport = report;
        Span<byte> bytes = stackalloc byte[ReportSize];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, report);
        if (transfer.Length < ReportSize)
        {
            // The keyboard always sends 8 bytes: babble into a smaller buffer.
            bytes[..transfer.Length].CopyTo(transfer.Bytes);
            actualLength = transfer.Length;
            return UrbStatus.Eoverflow;
        }

        bytes.CopyTo(transfer.Bytes);
        actualLength = ReportSize;
        return UrbStatus.Success;
    }
}
