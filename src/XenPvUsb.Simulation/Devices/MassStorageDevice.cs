using System.Buffers.Binary;
using Microsoft.Win32.SafeHandles;
using XenPvUsb.Usb;

namespace XenPvUsb.Simulation.Devices;

/// <summary>
/// A USB flash drive: mass storage class, SCSI transparent command set, Bulk-Only Transport
/// (usbmassbulk_10), one LUN backed by an image file of 512-byte blocks. Data moves straight between
/// the image and the transfer buffers; a data phase may span any number of bulk URBs.
/// </summary>
public sealed class MassStorageDevice : EmulatedUsbDevice
{
    public const ushort DefaultVendorId = 0x1209;
    public const ushort DefaultProductId = 0x5A01;
    public const ushort SuperSpeedProductId = 0x5A03;
    public const int BlockSize = 512;
    public const byte BulkInEndpoint = 0x81;
    public const byte BulkOutEndpoint = 0x02;

    private const uint CbwSignature = 0x43425355;
    private const uint CswSignature = 0x53425355;
    private const int CbwLength = 31;
    private const int CswLength = 13;

    private const byte StatusPassed = 0;
    private const byte StatusFailed = 1;
    private const byte StatusPhaseError = 2;

    private const byte SenseNone = 0x00;
    private const byte SenseMediumError = 0x03;
    private const byte SenseIllegalRequest = 0x05;
    private const byte SenseDataProtect = 0x07;

    private readonly SafeFileHandle _image;
    private readonly byte[] _response = new byte[64];
    private BotState _state;
    private bool _needsResetRecovery;
    private uint _tag;
    private uint _hostLength;
    private long _hostRemaining;
    private long _deviceRemaining;
    private long _processed;
    private long _offset;
    private DataSource _source;
    private byte _cswStatus;
    private byte _senseKey;
    private byte _asc;
    private byte _ascq;

    /// <param name="imagePath">Existing image file; its size must be a non-zero multiple of 512.</param>
    /// <param name="readOnly">Report write protection and refuse WRITE(10).</param>
    /// <param name="speed">
    /// High (default) or Full (a high-speed capable device either way), or Super: a USB 3 stick (bcdUSB
    /// 3.00, ep0 of 2^9 bytes, bulk endpoints of 1024 bytes with bursts of 16, as QEMU's usb-storage on xHCI).
    /// </param>
    public MassStorageDevice(string imagePath, bool readOnly = false, UsbSpeed speed = UsbSpeed.High)
        : base(
            speed,
            speed == UsbSpeed.Super
                ? UsbDescriptors.Device(0x0300, 0, 0, 0, 9, DefaultVendorId, SuperSpeedProductId, 0x0100, 1, 2, 3)
                : UsbDescriptors.Device(0x0200, 0, 0, 0, 64, DefaultVendorId, DefaultProductId, 0x0100, 1, 2, 3),
            speed switch
            {
                UsbSpeed.Super => BuildSuperSpeedConfiguration(),
                UsbSpeed.High => BuildConfiguration(512),
                _ => BuildConfiguration(64),
            },
            ["XenPvUsb", speed == UsbSpeed.Super ? "Emulated USB 3 Stick" : "Emulated Stick", speed == UsbSpeed.Super ? "XPU3001" : "XPU0001"],
            speed == UsbSpeed.Super ? null : BuildConfiguration(speed == UsbSpeed.High ? (ushort)64 : (ushort)512))
    {
        if (speed is not (UsbSpeed.High or UsbSpeed.Full or UsbSpeed.Super))
        {
            throw new ArgumentOutOfRangeException(nameof(speed), speed, "A mass storage device runs at super, high or full speed.");
        }

        ImagePath = imagePath;
        IsReadOnly = readOnly;
        _image = File.OpenHandle(
            imagePath,
            FileMode.Open,
            readOnly ? FileAccess.Read : FileAccess.ReadWrite,
            readOnly ? FileShare.ReadWrite : FileShare.Read);
        long length = RandomAccess.GetLength(_image);
        if (length == 0 || length % BlockSize != 0)
        {
            _image.Dispose();
            throw new ArgumentException($"Image size {length} is not a non-zero multiple of {BlockSize}.", nameof(imagePath));
        }

        BlockCount = length / BlockSize;
    }

    private enum BotState
    {
        ExpectCbw,
        DataIn,
        DataOut,
        Status,
    }

    private enum DataSource
    {
        None,
        Response,
        Image,
    }

    public string ImagePath { get; }

    public bool IsReadOnly { get; }

    public long BlockCount { get; }

    protected override int OnDataTransferLocked(UsbTransfer transfer, out int actualLength)
    {
        actualLength = 0;
        if (_needsResetRecovery)
        {
            // usbmassbulk_10 §6.6.1: after an invalid CBW both pipes stall until Reset Recovery,
            // so a cleared halt comes straight back.
            SetHaltLocked(transfer.Endpoint);
            return UrbStatus.Epipe;
        }

        bool isIn = transfer.Endpoint == BulkInEndpoint;
        return _state switch
        {
            // A transfer in the direction the device is not serving waits, as a NAKed one does.
            BotState.ExpectCbw => isIn ? Pending : ReceiveCbwLocked(transfer, out actualLength),
            BotState.DataIn => isIn ? SendDataLocked(transfer, out actualLength) : Pending,
            BotState.DataOut => isIn ? Pending : ReceiveDataLocked(transfer, out actualLength),
            _ => isIn ? SendCswLocked(transfer, out actualLength) : Pending,
        };
    }

    protected override void OnSubmittedLocked()
    {
        while (true)
        {
            byte endpoint = _state is BotState.ExpectCbw or BotState.DataOut ? BulkOutEndpoint : BulkInEndpoint;
            UsbTransfer? waiting = TakePendingLocked(endpoint);
            if (waiting is null)
            {
                return;
            }

            int status = OnDataTransferLocked(waiting, out int actualLength);
            CompleteLocked(waiting, status, actualLength);
        }
    }

    protected override int OnControlLocked(UsbSetupPacket setup, Span<byte> data, out int actualLength)
    {
        actualLength = 0;
        if (setup.Index != 0 || setup.Value != 0)
        {
            return UrbStatus.Epipe;
        }

        // Bulk-Only Mass Storage Reset: back to waiting for a CBW. Halts stay until the host clears them (§3.1).
        if (setup.RequestType == 0x21 && setup.Request == 0xFF && setup.Length == 0)
        {
            ResetTransportLocked();
            return UrbStatus.Success;
        }

        // Get Max LUN: one LUN, number 0.
        if (setup.RequestType == 0xA1 && setup.Request == 0xFE && setup.Length >= 1)
        {
            data[0] = 0;
            actualLength = 1;
            return UrbStatus.Success;
        }

        return UrbStatus.Epipe;
    }

    protected override void OnConfigurationChangedLocked() => ResetTransportLocked();

    protected override void OnResetLocked() => SetSenseLocked(SenseNone, 0, 0);

    protected override void OnUnpluggedLocked() => _image.Dispose();

    private static byte[] BuildConfiguration(ushort maxPacketSize) =>
        UsbDescriptors.Configuration(
            1,
            0,
            0x00,
            50,
            UsbDescriptors.Interface(0, 0, 2, 0x08, 0x06, 0x50),
            UsbDescriptors.Endpoint(BulkInEndpoint, UsbTransferTypeBits.Bulk, maxPacketSize, 0),
            UsbDescriptors.Endpoint(BulkOutEndpoint, UsbTransferTypeBits.Bulk, maxPacketSize, 0));

    // bMaxPower counts 8 mA at SuperSpeed: 12 is 96 mA.
    private static byte[] BuildSuperSpeedConfiguration() =>
        UsbDescriptors.Configuration(
            1,
            0,
            0x00,
            12,
            UsbDescriptors.Interface(0, 0, 2, 0x08, 0x06, 0x50),
            UsbDescriptors.Endpoint(BulkInEndpoint, UsbTransferTypeBits.Bulk, 1024, 0),
            UsbDescriptors.SuperSpeedEndpointCompanion(15, 0, 0),
            UsbDescriptors.Endpoint(BulkOutEndpoint, UsbTransferTypeBits.Bulk, 1024, 0),
            UsbDescriptors.SuperSpeedEndpointCompanion(15, 0, 0));

    private void ResetTransportLocked()
    {
        _state = BotState.ExpectCbw;
        _needsResetRecovery = false;
        _source = DataSource.None;
    }

    private int ReceiveCbwLocked(UsbTransfer transfer, out int actualLength)
    {
        // The packet itself is received either way; validity decides what follows (§6.2.1).
        actualLength = transfer.Length;
        ReadOnlySpan<byte> cbw = transfer.Bytes[..transfer.Length];
        if (cbw.Length != CbwLength || BinaryPrimitives.ReadUInt32LittleEndian(cbw) != CbwSignature)
        {
            _needsResetRecovery = true;
            SetHaltLocked(BulkInEndpoint);
            SetHaltLocked(BulkOutEndpoint);
            return UrbStatus.Success;
        }

        _tag = BinaryPrimitives.ReadUInt32LittleEndian(cbw[4..]);
        _hostLength = BinaryPrimitives.ReadUInt32LittleEndian(cbw[8..]);
        bool hostIn = (cbw[12] & 0x80) != 0;
        int cbLength = cbw[14];
        _processed = 0;
        _offset = 0;
        _source = DataSource.None;
        long deviceLength = 0;
        bool deviceIn = false;
        bool failed;

        // Not "meaningful" (§6.2.2): reserved bits, a LUN we do not have, or a bad CB length.
        if ((cbw[12] & 0x7F) != 0 || cbw[13] != 0 || cbLength is < 1 or > 16)
        {
            if (cbw[13] != 0)
            {
                SetSenseLocked(SenseIllegalRequest, 0x25, 0x00);
            }
            else
            {
                SetSenseLocked(SenseIllegalRequest, 0x24, 0x00);
            }

            failed = true;
        }
        else
        {
            failed = !ExecuteLocked(cbw.Slice(15, cbLength), out deviceLength, out deviceIn);
        }

        _cswStatus = failed ? StatusFailed : StatusPassed;
        ApplyThirteenCasesLocked(hostIn, deviceLength, deviceIn);
        return UrbStatus.Success;
    }

    // usbmassbulk_10 §6.7: reconcile what the host asked for (Hn/Hi/Ho) with what the command
    // produces (Dn/Di/Do).
    private void ApplyThirteenCasesLocked(bool hostIn, long deviceLength, bool deviceIn)
    {
        long hostLength = _hostLength;
        _hostRemaining = hostLength;
        _deviceRemaining = 0;
        if (hostLength == 0)
        {
            if (deviceLength != 0)
            {
                _cswStatus = StatusPhaseError;
            }

            _state = BotState.Status;
            return;
        }

        if (deviceLength != 0 && deviceIn != hostIn)
        {
            // Cases 8 and 10: opposite directions.
            _cswStatus = StatusPhaseError;
            _state = BotState.Status;
            SetHaltLocked(hostIn ? BulkInEndpoint : BulkOutEndpoint);
            return;
        }

        if (deviceLength > hostLength)
        {
            // Cases 7 and 13: the host wants less than the command moves.
            _cswStatus = StatusPhaseError;
            deviceLength = hostLength;
            if (!hostIn)
            {
                _source = DataSource.None;
            }
        }

        _deviceRemaining = deviceLength;
        if (deviceLength == 0)
        {
            // Cases 4 and 9: no data at all; stall the data pipe, the CSW follows after ClearHalt.
            _state = BotState.Status;
            SetHaltLocked(hostIn ? BulkInEndpoint : BulkOutEndpoint);
            return;
        }

        _state = hostIn ? BotState.DataIn : BotState.DataOut;
    }

    private int SendDataLocked(UsbTransfer transfer, out int actualLength)
    {
        int requested = transfer.Length;
        int count = (int)Math.Min(requested, _deviceRemaining);
        Span<byte> destination = transfer.Bytes[..count];
        if (_source == DataSource.Image)
        {
            if (!ReadImage(destination, _offset))
            {
                SetSenseLocked(SenseMediumError, 0x11, 0x00);
                _cswStatus = StatusFailed;
                count = 0;
                _deviceRemaining = 0;
            }
        }
        else if (_source == DataSource.Response)
        {
            _response.AsSpan((int)_offset, count).CopyTo(destination);
        }

        _offset += count;
        _deviceRemaining -= count;
        _hostRemaining -= count;
        _processed += count;
        actualLength = count;
        if (_deviceRemaining > 0)
        {
            return UrbStatus.Success;
        }

        _state = BotState.Status;
        if (_hostRemaining == 0)
        {
            return UrbStatus.Success;
        }

        // Case 5 (Hi > Di): end the data with a short packet, or a stall when the data ended on a
        // packet boundary, and keep the pipe halted until the host clears it and reads the CSW.
        SetHaltLocked(BulkInEndpoint);
        return count < requested && count % MaxPacketSizeLocked(BulkInEndpoint) == 0 ? UrbStatus.Epipe : UrbStatus.Success;
    }

    private int ReceiveDataLocked(UsbTransfer transfer, out int actualLength)
    {
        int offered = transfer.Length;
        int count = (int)Math.Min(offered, _deviceRemaining);
        if (_source == DataSource.Image && !WriteImage(transfer.Bytes[..count], _offset))
        {
            SetSenseLocked(SenseMediumError, 0x0C, 0x00);
            _cswStatus = StatusFailed;
            _source = DataSource.None;
        }

        _offset += count;
        _deviceRemaining -= count;
        _hostRemaining -= count;
        _processed += count;
        actualLength = count;
        if (_deviceRemaining > 0)
        {
            return UrbStatus.Success;
        }

        _state = BotState.Status;
        if (_hostRemaining == 0)
        {
            return UrbStatus.Success;
        }

        // Case 11 (Ho > Do): take what the command needs, then stall the rest.
        SetHaltLocked(BulkOutEndpoint);
        return count < offered ? UrbStatus.Epipe : UrbStatus.Success;
    }

    private int SendCswLocked(UsbTransfer transfer, out int actualLength)
    {
        Span<byte> csw = stackalloc byte[CswLength];
        BinaryPrimitives.WriteUInt32LittleEndian(csw, CswSignature);
        BinaryPrimitives.WriteUInt32LittleEndian(csw[4..], _tag);
        BinaryPrimitives.WriteUInt32LittleEndian(csw[8..], (uint)(_hostLength - _processed));
        csw[12] = _cswStatus;
        _state = BotState.ExpectCbw;
        _source = DataSource.None;
        if (transfer.Length < CswLength)
        {
            // The device sends all 13 bytes regardless: babble.
            csw[..transfer.Length].CopyTo(transfer.Bytes);
            actualLength = transfer.Length;
            return UrbStatus.Eoverflow;
        }

        csw.CopyTo(transfer.Bytes);
        actualLength = CswLength;
        return UrbStatus.Success;
    }

    // Runs one SCSI command. Returns false for CHECK CONDITION (sense set); deviceLength/deviceIn
    // describe the data phase the command wants (Dn when 0).
    private bool ExecuteLocked(ReadOnlySpan<byte> cdb, out long deviceLength, out bool deviceIn)
    {
        deviceLength = 0;
        deviceIn = true;
        switch (cdb[0])
        {
            case 0x00: // TEST UNIT READY
            case 0x1B: // START STOP UNIT
            case 0x1E: // PREVENT ALLOW MEDIUM REMOVAL
            case 0x35: // SYNCHRONIZE CACHE(10): writes already reached the file
                return Passed();
            case 0x03: // REQUEST SENSE, fixed format
                if (cdb.Length < 6)
                {
                    return InvalidField();
                }

                Span<byte> sense = _response.AsSpan(0, 18);
                sense.Clear();
                sense[0] = 0x70;
                sense[2] = _senseKey;
                sense[7] = 10;
                sense[12] = _asc;
                sense[13] = _ascq;
                SetSenseLocked(SenseNone, 0, 0);
                return Respond(Math.Min(18, (int)cdb[4]), out deviceLength);
            case 0x12: // INQUIRY
                if (cdb.Length < 6 || (cdb[1] & 0x01) != 0 || cdb[2] != 0)
                {
                    return InvalidField();
                }

                WriteInquiry(_response);
                return Respond(Math.Min(36, (int)BinaryPrimitives.ReadUInt16BigEndian(cdb[3..])), out deviceLength);
            case 0x1A: // MODE SENSE(6)
                if (cdb.Length < 6)
                {
                    return InvalidField();
                }

                int page = cdb[2] & 0x3F;
                if (page is not (0x3F or 0x08))
                {
                    return InvalidField();
                }

                int modeLength = WriteModeSense(_response);
                return Respond(Math.Min(modeLength, (int)cdb[4]), out deviceLength);
            case 0x25: // READ CAPACITY(10)
                if (cdb.Length < 10)
                {
                    return InvalidField();
                }

                BinaryPrimitives.WriteUInt32BigEndian(_response, (uint)Math.Min(BlockCount - 1, uint.MaxValue));
                BinaryPrimitives.WriteUInt32BigEndian(_response.AsSpan(4), BlockSize);
                return Respond(8, out deviceLength);
            case 0x28: // READ(10)
            case 0x2A: // WRITE(10)
                if (cdb.Length < 10)
                {
                    return InvalidField();
                }

                bool write = cdb[0] == 0x2A;
                long lba = BinaryPrimitives.ReadUInt32BigEndian(cdb[2..]);
                long blocks = BinaryPrimitives.ReadUInt16BigEndian(cdb[7..]);
                if (lba + blocks > BlockCount)
                {
                    SetSenseLocked(SenseIllegalRequest, 0x21, 0x00);
                    return false;
                }

                if (write && IsReadOnly)
                {
                    SetSenseLocked(SenseDataProtect, 0x27, 0x00);
                    return false;
                }

                _source = blocks == 0 ? DataSource.None : DataSource.Image;
                _offset = lba * BlockSize;
                deviceLength = blocks * BlockSize;
                deviceIn = !write;
                return Passed();
            default:
                SetSenseLocked(SenseIllegalRequest, 0x20, 0x00);
                return false;
        }
    }

    private bool Passed()
    {
        SetSenseLocked(SenseNone, 0, 0);
        return true;
    }

    private bool InvalidField()
    {
        SetSenseLocked(SenseIllegalRequest, 0x24, 0x00);
        return false;
    }

    private bool Respond(int length, out long deviceLength)
    {
        _source = DataSource.Response;
        _offset = 0;
        deviceLength = length;
        return true;
    }

    private void WriteInquiry(Span<byte> inquiry)
    {
        inquiry[..36].Clear();
        inquiry[0] = 0x00; // direct-access block device
        inquiry[1] = 0x80; // removable medium
        inquiry[2] = 0x04; // SPC-2
        inquiry[3] = 0x02; // response data format
        inquiry[4] = 36 - 5;
        "XenPvUsb"u8.CopyTo(inquiry[8..]);
        "Emulated Stick  "u8.CopyTo(inquiry[16..]);
        "1.00"u8.CopyTo(inquiry[32..]);
    }

    private int WriteModeSense(Span<byte> mode)
    {
        // Header, no block descriptor, then the caching page: write-through and nothing changeable,
        // so current, changeable and default values all read the same.
        const int length = 4 + 20;
        mode[..length].Clear();
        mode[0] = length - 1;
        mode[2] = IsReadOnly ? (byte)0x80 : (byte)0x00;
        mode[4] = 0x08;
        mode[5] = 0x12;
        return length;
    }

    private void SetSenseLocked(byte key, byte asc, byte ascq)
    {
        _senseKey = key;
        _asc = asc;
        _ascq = ascq;
    }

    private bool ReadImage(Span<byte> destination, long offset)
    {
        try
        {
            while (!destination.IsEmpty)
            {
                int read = RandomAccess.Read(_image, destination, offset);
                if (read <= 0)
                {
                    return false;
                }

                destination = destination[read..];
                offset += read;
            }

            return true;
        }
        catch (IOException)
        {
            return false;
        }
    }

    private bool WriteImage(ReadOnlySpan<byte> source, long offset)
    {
        try
        {
            RandomAccess.Write(_image, source, offset);
            return true;
        }
        catch (IOException)
        {
            return false;
        }
    }
}
