using System.Buffers.Binary;
using XenPvUsb.Usb;

namespace XenPvUsb.Simulation.Devices;

/// <summary>
/// Base of the emulated USB devices: descriptor store, chapter 9 standard requests, configuration,
/// alternate settings and endpoint halt state, with usbfs-shaped submit errors. Subclasses answer
/// class/vendor requests and move data on their endpoints.
/// </summary>
/// <remarks>
/// Locking: one lock per device guards all state; the subclass hooks (<c>On...Locked</c>) run under
/// it. Completions are queued under the lock and delivered after it is released, by one thread at a
/// time and in queue order, so an owner may resubmit from its completion callback and a device never
/// calls out while holding its lock. Submit delivers inline when it can answer at once.
///
/// Isochronous transfers are scheduled as a host controller does with URB_ISO_ASAP: on a (micro)frame
/// clock (1 ms at low and full speed, 125 µs at high speed and above) each packet takes one service
/// interval (2^(bInterval-1) frames), a transfer starts at the next free frame, right behind the ones
/// already queued on its endpoint, and completes once its last frame has passed. Its packets are then
/// served by <see cref="OnIsochronousPacketLocked"/> in order, on the clock's timer thread.
/// </remarks>
public abstract class EmulatedUsbDevice : IUsbHostDevice
{
    /// <summary>Returned by a hook when the transfer waits (a real device NAKs); it is completed later.</summary>
    protected const int Pending = int.MinValue;

    private const byte NoEndpoint = 0xFF;

    // devio.c: "arbitrary limit need for USB 3.1 Gen2", 96 DPs of 1024 bytes.
    private const int MaxIsoPacketLength = 98304;

    private readonly Lock _lock = new();
    private readonly byte[] _deviceDescriptor;
    private readonly byte[] _configuration;
    private readonly byte[]? _otherSpeedConfiguration;
    private readonly byte[]? _deviceQualifier;
    private readonly byte[][] _strings;
    private readonly EndpointEntry[] _endpoints;
    private readonly int[] _altCount;
    private readonly byte[] _altSetting;
    private readonly byte[] _activeType = new byte[32];
    private readonly ushort[] _activeMaxPacket = new ushort[32];
    private readonly byte[] _activeInterface = new byte[32];
    private readonly bool[] _halted = new bool[32];
    private readonly byte[] _activeInterval = new byte[32];
    private readonly byte[] _activeMult = new byte[32];
    private readonly List<UsbTransfer> _pending = new(16);
    private readonly List<IsoEntry> _isoQueue = new(16);
    private readonly TimeProvider _time;
    private readonly long _frameOrigin;
    private ITimer? _isoTimer;
    private long _isoTimerFrame = long.MaxValue;
    private readonly Queue<(UsbTransfer Transfer, int Status, int ActualLength)> _completions = new(16);
    private bool _flushing;
    private byte _configurationValue;
    private bool _remoteWakeup;
    private bool _unplugged;
    private bool _claimed;
    private byte _address;

    /// <param name="speed">Speed the device runs at (Low, Full, High or Super).</param>
    /// <param name="deviceDescriptor">The 18-byte device descriptor.</param>
    /// <param name="configuration">The configuration blob (exactly wTotalLength bytes) for <paramref name="speed"/>.</param>
    /// <param name="strings">String descriptors 1..n as text (null for a gap); string 0 is the language table.</param>
    /// <param name="otherSpeedConfiguration">
    /// For a high-speed capable device, its configuration at the other speed; then device_qualifier and
    /// other_speed_configuration are answered. Null for a full/low-speed-only device (they stall).
    /// </param>
    /// <param name="timeProvider">The clock isochronous transfers are scheduled on; the system clock by default.</param>
    protected EmulatedUsbDevice(
        UsbSpeed speed,
        byte[] deviceDescriptor,
        byte[] configuration,
        IReadOnlyList<string?> strings,
        byte[]? otherSpeedConfiguration = null,
        TimeProvider? timeProvider = null)
    {
        ArgumentNullException.ThrowIfNull(deviceDescriptor);
        ArgumentNullException.ThrowIfNull(configuration);
        ArgumentNullException.ThrowIfNull(strings);
        if (speed is not (UsbSpeed.Low or UsbSpeed.Full or UsbSpeed.High or UsbSpeed.Super))
        {
            throw new ArgumentOutOfRangeException(nameof(speed), speed, "Emulated devices run at low, full, high or super speed.");
        }

        if (deviceDescriptor.Length != 18 || deviceDescriptor[0] != 18 || deviceDescriptor[1] != UsbDescriptors.DeviceType)
        {
            throw new ArgumentException("Not a device descriptor.", nameof(deviceDescriptor));
        }

        if (configuration.Length < 9 || configuration[1] != UsbDescriptors.ConfigurationType
            || BinaryPrimitives.ReadUInt16LittleEndian(configuration.AsSpan(2)) != configuration.Length)
        {
            throw new ArgumentException("Configuration blob length does not match wTotalLength.", nameof(configuration));
        }

        Speed = speed;
        _time = timeProvider ?? TimeProvider.System;
        _frameOrigin = _time.GetTimestamp();
        FramePeriod = speed is UsbSpeed.Low or UsbSpeed.Full ? TimeSpan.FromMilliseconds(1) : TimeSpan.FromMicroseconds(125);
        _deviceDescriptor = deviceDescriptor;
        _configuration = configuration;
        Descriptors = (byte[])[.. deviceDescriptor, .. configuration];
        _strings = new byte[strings.Count + 1][];
        _strings[0] = UsbDescriptors.LanguageTable(UsbDescriptors.LangIdEnglishUs);
        for (int i = 0; i < strings.Count; i++)
        {
            _strings[i + 1] = strings[i] is { } s ? UsbDescriptors.String(s) : [];
        }

        if (otherSpeedConfiguration is not null)
        {
            _otherSpeedConfiguration = (byte[])otherSpeedConfiguration.Clone();
            _otherSpeedConfiguration[1] = UsbDescriptors.OtherSpeedConfigurationType;
            _deviceQualifier = UsbDescriptors.DeviceQualifier(deviceDescriptor, 64);
        }

        (_endpoints, _altCount) = ParseConfiguration(configuration);
        _altSetting = new byte[_altCount.Length];
        RebuildActiveEndpointsLocked();
    }

    /// <summary>Bus id once plugged into an <see cref="EmulatedUsbHost"/>; empty before.</summary>
    public string BusId { get; internal set; } = "";

    public UsbSpeed Speed { get; }

    /// <summary>The device descriptor and the configuration's set, as the host's usbfs read() gives them.</summary>
    public ReadOnlyMemory<byte> Descriptors { get; }

    public ReadOnlySpan<byte> DeviceDescriptor => _deviceDescriptor;

    public ReadOnlySpan<byte> ConfigurationDescriptor => _configuration;

    public ushort BcdUsb => BinaryPrimitives.ReadUInt16LittleEndian(_deviceDescriptor.AsSpan(2));

    public byte DeviceClass => _deviceDescriptor[4];

    public byte DeviceSubClass => _deviceDescriptor[5];

    public byte DeviceProtocol => _deviceDescriptor[6];

    public byte MaxPacketSize0 => _deviceDescriptor[7];

    public ushort VendorId => BinaryPrimitives.ReadUInt16LittleEndian(_deviceDescriptor.AsSpan(8));

    public ushort ProductId => BinaryPrimitives.ReadUInt16LittleEndian(_deviceDescriptor.AsSpan(10));

    public ushort BcdDevice => BinaryPrimitives.ReadUInt16LittleEndian(_deviceDescriptor.AsSpan(12));

    public byte NumConfigurations => _deviceDescriptor[17];

    public string? Manufacturer => GetString(_deviceDescriptor[14]);

    public string? Product => GetString(_deviceDescriptor[15]);

    public string? Serial => GetString(_deviceDescriptor[16]);

    /// <summary>Number of downstream ports (sysfs maxchild); 0 unless the device is a hub.</summary>
    public virtual int MaxChild => 0;

    /// <summary>Active bConfigurationValue, 0 when unconfigured (address state).</summary>
    public int ActiveConfiguration
    {
        get
        {
            lock (_lock)
            {
                return _configurationValue;
            }
        }
    }

    /// <summary>Last address set by a SET_ADDRESS that reached the device (the backend normally intercepts it).</summary>
    public int Address
    {
        get
        {
            lock (_lock)
            {
                return _address;
            }
        }
    }

    public bool IsUnplugged
    {
        get
        {
            lock (_lock)
            {
                return _unplugged;
            }
        }
    }

    /// <summary>Open through <see cref="EmulatedUsbHost.Open"/> and not yet disposed.</summary>
    public bool IsClaimed
    {
        get
        {
            lock (_lock)
            {
                return _claimed;
            }
        }
    }

    /// <summary>Transfers waiting for the device (a real device is NAKing them).</summary>
    public int PendingCount
    {
        get
        {
            lock (_lock)
            {
                return _pending.Count;
            }
        }
    }

    /// <summary>Length of one tick of the isochronous schedule: a frame (1 ms) at low and full speed, a microframe (125 µs) above.</summary>
    public TimeSpan FramePeriod { get; }

    /// <summary>The (micro)frame the bus is in now, counted from the device's construction.</summary>
    public long FrameNumber => _time.GetElapsedTime(_frameOrigin).Ticks / FramePeriod.Ticks;

    protected Lock SyncRoot => _lock;

    /// <summary>String descriptor <paramref name="index"/> as text; null for index 0 or a missing string.</summary>
    public string? GetString(int index) =>
        index > 0 && index < _strings.Length && _strings[index].Length > 0 ? UsbDescriptors.DecodeString(_strings[index]) : null;

    public void Submit(UsbTransfer transfer)
    {
        ArgumentNullException.ThrowIfNull(transfer);
        lock (_lock)
        {
            int status = SubmitLocked(transfer, out int actualLength);
            if (status == Pending)
            {
                _pending.Add(transfer);
            }
            else
            {
                CompleteLocked(transfer, status, actualLength);
            }

            if (!_unplugged)
            {
                OnSubmittedLocked();
            }
        }

        FlushCompletions();
    }

    public void Cancel(UsbTransfer transfer)
    {
        ArgumentNullException.ThrowIfNull(transfer);
        lock (_lock)
        {
            int index = _pending.IndexOf(transfer);
            if (index < 0)
            {
                return;
            }

            RemovePendingAtLocked(index);
            CompleteLocked(transfer, UrbStatus.Enoent, 0);
        }

        FlushCompletions();
    }

    public int SetConfiguration(int configurationValue)
    {
        int result;
        lock (_lock)
        {
            result = SetConfigurationLocked(configurationValue);
        }

        FlushCompletions();
        return result;
    }

    public int SetInterface(int interfaceNumber, int alternateSetting)
    {
        int result;
        lock (_lock)
        {
            result = SetInterfaceLocked(interfaceNumber, alternateSetting);
        }

        FlushCompletions();
        return result;
    }

    public int ClearHalt(byte endpoint)
    {
        int result;
        lock (_lock)
        {
            result = ClearHaltLocked(endpoint);
        }

        FlushCompletions();
        return result;
    }

    /// <summary>How many times the host reset the device.</summary>
    public int ResetCount { get; private set; }

    /// <summary>
    /// Port reset and re-enumeration as usb_reset_device does it: pending transfers end with
    /// -ESHUTDOWN, halts and alternate settings are cleared, and the active configuration is restored.
    /// </summary>
    public int Reset()
    {
        lock (_lock)
        {
            if (_unplugged)
            {
                return UrbStatus.Enodev;
            }

            ResetCount++;
            KillPendingLocked(UrbStatus.Eshutdown, -1);
            Array.Clear(_halted);
            Array.Clear(_altSetting);
            _remoteWakeup = false;
            RebuildActiveEndpointsLocked();
            OnResetLocked();
            OnConfigurationChangedLocked();
        }

        FlushCompletions();
        return 0;
    }

    // The emulated operations are in-memory and quick, so they run on the caller's thread; a device
    // that takes its time is a wrapper (SlowUsbDevice) around one.
    public Task<int> SetConfigurationAsync(int configurationValue) => Task.FromResult(SetConfiguration(configurationValue));

    public Task<int> SetInterfaceAsync(int interfaceNumber, int alternateSetting) => Task.FromResult(SetInterface(interfaceNumber, alternateSetting));

    public Task<int> ClearHaltAsync(byte endpoint) => Task.FromResult(ClearHalt(endpoint));

    public Task<int> ResetAsync() => Task.FromResult(Reset());

    /// <summary>Nothing is kept per transfer once it completed.</summary>
    public void Forget(UsbTransfer transfer)
    {
    }

    /// <summary>No host drivers here: closing for a successor is releasing the claim.</summary>
    public void Close() => Dispose();

    /// <summary>The claim is released within <see cref="Dispose"/>, so this is always complete.</summary>
    public Task Released => Task.CompletedTask;

    /// <summary>Releases the claim (as closing the usbfs fd): pending transfers are killed with -ENOENT. The device stays usable.</summary>
    public void Dispose()
    {
        lock (_lock)
        {
            KillPendingLocked(UrbStatus.Enoent, -1);
            _claimed = false;
        }

        FlushCompletions();
    }

    /// <summary>
    /// The device leaves the bus for good: pending and later transfers complete with -ENODEV, the
    /// control methods return -ENODEV, and subclasses release their resources (e.g. the image file).
    /// </summary>
    public void Unplug()
    {
        lock (_lock)
        {
            if (_unplugged)
            {
                return;
            }

            _unplugged = true;
            KillPendingLocked(UrbStatus.Enodev, -1);
            _isoTimer?.Dispose();
            _isoTimer = null;
            OnUnpluggedLocked();
        }

        FlushCompletions();
    }

    internal bool TryClaim()
    {
        lock (_lock)
        {
            if (_claimed || _unplugged)
            {
                return false;
            }

            _claimed = true;
            return true;
        }
    }

    /// <summary>Moves data on a non-control endpoint that is active and not halted. Returns a status or <see cref="Pending"/>.</summary>
    protected abstract int OnDataTransferLocked(UsbTransfer transfer, out int actualLength);

    /// <summary>
    /// One packet of an isochronous transfer on an active isochronous endpoint, once the (micro)frame it was
    /// scheduled in (<paramref name="frame"/>) has passed; the packets of a transfer come in order, and the
    /// transfers of an endpoint in the order they were submitted. OUT: <paramref name="data"/> is what the host
    /// sent. IN: <paramref name="data"/> (zeroed) is where the device's bytes go, at most its length; a device
    /// with more to send babbles (-EOVERFLOW). Returns the packet's status (0 or a negative errno) and the bytes
    /// moved. Default: the device does not answer (-EXDEV, nothing moved).
    /// </summary>
    protected virtual int OnIsochronousPacketLocked(byte endpoint, long frame, Span<byte> data, out int actualLength)
    {
        actualLength = 0;
        return UrbStatus.Exdev;
    }

    /// <summary>Class and vendor requests, and standard requests the base does not know. Default: stall.</summary>
    protected virtual int OnControlLocked(UsbSetupPacket setup, Span<byte> data, out int actualLength)
    {
        actualLength = 0;
        return UrbStatus.Epipe;
    }

    /// <summary>After SET_CONFIGURATION and after a reset: endpoint state starts afresh.</summary>
    protected virtual void OnConfigurationChangedLocked()
    {
    }

    /// <summary>
    /// After every Submit, once the submitted transfer's own completion (if any) is queued: a device
    /// whose state moved on can now serve transfers it left pending, in order behind it.
    /// </summary>
    protected virtual void OnSubmittedLocked()
    {
    }

    /// <summary>A usbfs reset, before <see cref="OnConfigurationChangedLocked"/>.</summary>
    protected virtual void OnResetLocked()
    {
    }

    /// <summary>A halt was cleared on <paramref name="endpoint"/> (ClearHalt or CLEAR_FEATURE).</summary>
    protected virtual void OnClearHaltLocked(byte endpoint)
    {
    }

    protected virtual void OnUnpluggedLocked()
    {
    }

    /// <summary>Queues a completion; it is delivered by the next <see cref="FlushCompletions"/>.</summary>
    protected void CompleteLocked(UsbTransfer transfer, int status, int actualLength)
    {
        // usbfs does not pass SHORT_NOT_OK on to isochronous URBs (it only warns about it).
        if (status == UrbStatus.Success && transfer.ShortNotOk && transfer.Type != UsbTransferType.Isochronous)
        {
            bool isIn;
            int requested;
            if (transfer.Type == UsbTransferType.Control)
            {
                isIn = (transfer.Bytes[0] & 0x80) != 0;
                requested = BinaryPrimitives.ReadUInt16LittleEndian(transfer.Bytes[6..]);
            }
            else
            {
                isIn = transfer.IsIn;
                requested = transfer.Length;
            }

            if (isIn && actualLength < requested)
            {
                status = UrbStatus.Eremoteio;
            }
        }

        _completions.Enqueue((transfer, status, actualLength));
    }

    /// <summary>Delivers queued completions; call it after releasing <see cref="SyncRoot"/>.</summary>
    protected void FlushCompletions()
    {
        lock (_lock)
        {
            // Whoever is already flushing delivers ours too, in order; this also bounds re-entrancy
            // when an owner resubmits from its completion callback.
            if (_flushing)
            {
                return;
            }

            _flushing = true;
        }

        try
        {
            while (true)
            {
                (UsbTransfer Transfer, int Status, int ActualLength) next;
                lock (_lock)
                {
                    if (!_completions.TryDequeue(out next))
                    {
                        _flushing = false;
                        return;
                    }
                }

                next.Transfer.Complete(next.Status, next.ActualLength);
            }
        }
        catch
        {
            lock (_lock)
            {
                _flushing = false;
            }

            throw;
        }
    }

    /// <summary>Removes and returns the oldest pending transfer on <paramref name="endpoint"/>, or null.</summary>
    protected UsbTransfer? TakePendingLocked(byte endpoint)
    {
        for (int i = 0; i < _pending.Count; i++)
        {
            UsbTransfer transfer = _pending[i];
            if (transfer.Endpoint == endpoint)
            {
                RemovePendingAtLocked(i);
                return transfer;
            }
        }

        return null;
    }

    /// <summary>Halts (stalls) an endpoint: transfers waiting on it complete with -EPIPE, later ones too until the halt is cleared.</summary>
    protected void SetHaltLocked(byte endpoint)
    {
        int index = EndpointIndex(endpoint);
        if ((endpoint & 0x0F) == 0 || _activeType[index] == NoEndpoint)
        {
            return;
        }

        _halted[index] = true;
        KillPendingLocked(UrbStatus.Epipe, index);
    }

    protected bool IsHaltedLocked(byte endpoint) => _halted[EndpointIndex(endpoint)];

    /// <summary>The alternate setting an interface of the active configuration is in (0 when unconfigured).</summary>
    protected int AlternateSettingLocked(int interfaceNumber) =>
        interfaceNumber >= 0 && interfaceNumber < _altSetting.Length ? _altSetting[interfaceNumber] : 0;

    /// <summary>wMaxPacketSize of an active endpoint, 0 if none.</summary>
    protected int MaxPacketSizeLocked(byte endpoint) => _activeMaxPacket[EndpointIndex(endpoint)];

    private static int EndpointIndex(byte endpoint) => (endpoint & 0x0F) | ((endpoint & 0x80) >> 3);

    private static int Reply(ReadOnlySpan<byte> source, Span<byte> data, out int actualLength)
    {
        actualLength = Math.Min(source.Length, data.Length);
        source[..actualLength].CopyTo(data);
        return UrbStatus.Success;
    }

    private static (EndpointEntry[] Endpoints, int[] AltCount) ParseConfiguration(byte[] configuration)
    {
        var endpoints = new List<EndpointEntry>();
        int[] altCount = new int[32];
        int maxInterface = -1;
        int currentInterface = -1;
        int currentAlt = 0;
        for (int i = configuration[0]; i + 1 < configuration.Length; i += configuration[i])
        {
            if (configuration[i] < 2 || i + configuration[i] > configuration.Length)
            {
                throw new ArgumentException("Malformed configuration blob.", nameof(configuration));
            }

            if (configuration[i + 1] == UsbDescriptors.InterfaceType)
            {
                currentInterface = configuration[i + 2];
                currentAlt = configuration[i + 3];
                altCount[currentInterface] = Math.Max(altCount[currentInterface], currentAlt + 1);
                maxInterface = Math.Max(maxInterface, currentInterface);
            }
            else if (configuration[i + 1] == UsbDescriptors.EndpointType && currentInterface >= 0)
            {
                ushort maxPacket = BinaryPrimitives.ReadUInt16LittleEndian(configuration.AsSpan(i + 4));
                endpoints.Add(new EndpointEntry(
                    (byte)currentInterface,
                    (byte)currentAlt,
                    configuration[i + 2],
                    (byte)(configuration[i + 3] & 3),
                    (ushort)(maxPacket & 0x7FF),
                    (byte)((maxPacket >> 11) & 3),
                    configuration[i + 6]));
            }
        }

        return (endpoints.ToArray(), altCount[..(maxInterface + 1)]);
    }

    private int SubmitLocked(UsbTransfer transfer, out int actualLength)
    {
        actualLength = 0;
        if (_unplugged)
        {
            return UrbStatus.Enodev;
        }

        byte endpoint = transfer.Endpoint;
        if ((endpoint & ~0x8F) != 0 || transfer.Length < 0 || transfer.Length > transfer.Capacity)
        {
            return UrbStatus.Einval;
        }

        int index = EndpointIndex(endpoint);
        if (transfer.Type == UsbTransferType.Control)
        {
            if ((endpoint & 0x0F) != 0)
            {
                return _activeType[index] == NoEndpoint ? UrbStatus.Enoent : UrbStatus.Einval;
            }

            if (transfer.Length < UsbTransfer.SetupSize)
            {
                return UrbStatus.Einval;
            }

            UsbSetupPacket setup = UsbSetupPacket.Read(transfer.Bytes);
            if (transfer.Length < UsbTransfer.SetupSize + setup.Length)
            {
                return UrbStatus.Einval;
            }

            return HandleControlLocked(setup, transfer.Bytes.Slice(UsbTransfer.SetupSize, setup.Length), out actualLength);
        }

        if ((endpoint & 0x0F) == 0)
        {
            return UrbStatus.Einval;
        }

        byte type = _activeType[index];
        if (type == NoEndpoint)
        {
            // Also the unconfigured case: no endpoint but ep0 is active (usbfs: ENOENT at submit).
            return UrbStatus.Enoent;
        }

        bool typeMatches = transfer.Type switch
        {
            // usbfs quietly turns a bulk URB on an interrupt endpoint into an interrupt URB.
            UsbTransferType.Bulk => type is (byte)UsbTransferTypeBits.Bulk or (byte)UsbTransferTypeBits.Interrupt,
            UsbTransferType.Interrupt => type == (byte)UsbTransferTypeBits.Interrupt,
            UsbTransferType.Isochronous => type == (byte)UsbTransferTypeBits.Isochronous,
            _ => false,
        };
        if (!typeMatches)
        {
            return UrbStatus.Einval;
        }

        if (_halted[index])
        {
            return UrbStatus.Epipe;
        }

        if (transfer.Type == UsbTransferType.Isochronous)
        {
            return ScheduleIsochronousLocked(transfer, index);
        }

        return OnDataTransferLocked(transfer, out actualLength);
    }

    private int HandleControlLocked(UsbSetupPacket setup, Span<byte> data, out int actualLength)
    {
        actualLength = 0;
        if (setup.Kind != 0)
        {
            return OnControlLocked(setup, data, out actualLength);
        }

        switch (setup.Request)
        {
            case 0x00 when setup.IsIn:
                return GetStatusLocked(setup, data, out actualLength);
            case 0x01 when !setup.IsIn:
            case 0x03 when !setup.IsIn:
                return SetOrClearFeatureLocked(setup, set: setup.Request == 0x03);
            case 0x05 when setup.RequestType == 0x00 && setup.Value <= 127 && setup.Index == 0:
                _address = (byte)setup.Value;
                return UrbStatus.Success;
            case 0x06 when setup.RequestType == 0x80:
                return GetDescriptorLocked(setup, data, out actualLength);
            case 0x08 when setup.RequestType == 0x80:
                return Reply([_configurationValue], data, out actualLength);
            case 0x09 when setup.RequestType == 0x00:
                return SetConfigurationLocked(setup.Value & 0xFF) == 0 ? UrbStatus.Success : UrbStatus.Epipe;
            case 0x0A when setup.RequestType == 0x81:
                if (_configurationValue == 0 || setup.Index >= _altCount.Length || _altCount[setup.Index] == 0)
                {
                    return UrbStatus.Epipe;
                }

                return Reply([_altSetting[setup.Index]], data, out actualLength);
            case 0x0B when setup.RequestType == 0x01:
                return SetInterfaceLocked(setup.Index, setup.Value) == 0 ? UrbStatus.Success : UrbStatus.Epipe;
            default:
                return OnControlLocked(setup, data, out actualLength);
        }
    }

    private int GetStatusLocked(UsbSetupPacket setup, Span<byte> data, out int actualLength)
    {
        actualLength = 0;
        if (setup.Value != 0)
        {
            return UrbStatus.Epipe;
        }

        int status;
        switch (setup.Recipient)
        {
            case 0:
                status = ((_configuration[7] & 0x40) != 0 ? 1 : 0) | (_remoteWakeup ? 2 : 0);
                break;
            case 1:
                if (_configurationValue == 0 || setup.Index >= _altCount.Length || _altCount[setup.Index] == 0)
                {
                    return UrbStatus.Epipe;
                }

                status = 0;
                break;
            case 2:
                byte endpoint = (byte)setup.Index;
                if ((endpoint & 0x0F) == 0)
                {
                    status = 0;
                    break;
                }

                int index = EndpointIndex(endpoint);
                if ((endpoint & ~0x8F) != 0 || _activeType[index] == NoEndpoint)
                {
                    return UrbStatus.Epipe;
                }

                status = _halted[index] ? 1 : 0;
                break;
            default:
                return UrbStatus.Epipe;
        }

        return Reply([(byte)status, 0], data, out actualLength);
    }

    private int SetOrClearFeatureLocked(UsbSetupPacket setup, bool set)
    {
        if (setup.Length != 0)
        {
            return UrbStatus.Epipe;
        }

        switch (setup.Recipient)
        {
            case 0 when setup.Value == 1 && (_configuration[7] & 0x20) != 0:
                _remoteWakeup = set;
                return UrbStatus.Success;
            case 2 when setup.Value == 0:
                byte endpoint = (byte)setup.Index;
                if ((endpoint & 0x0F) == 0)
                {
                    return UrbStatus.Success;
                }

                if ((endpoint & ~0x8F) != 0 || _activeType[EndpointIndex(endpoint)] == NoEndpoint)
                {
                    return UrbStatus.Epipe;
                }

                if (set)
                {
                    SetHaltLocked(endpoint);
                    return UrbStatus.Success;
                }

                return ClearHaltLocked(endpoint) == 0 ? UrbStatus.Success : UrbStatus.Epipe;
            default:
                return UrbStatus.Epipe;
        }
    }

    private int GetDescriptorLocked(UsbSetupPacket setup, Span<byte> data, out int actualLength)
    {
        actualLength = 0;
        int index = setup.Value & 0xFF;
        switch (setup.Value >> 8)
        {
            case UsbDescriptors.DeviceType when index == 0:
                return Reply(_deviceDescriptor, data, out actualLength);
            case UsbDescriptors.ConfigurationType when index == 0:
                return Reply(_configuration, data, out actualLength);
            case UsbDescriptors.StringType when index < _strings.Length && _strings[index].Length > 0:
                return Reply(_strings[index], data, out actualLength);
            case UsbDescriptors.DeviceQualifierType when index == 0 && _deviceQualifier is not null:
                return Reply(_deviceQualifier, data, out actualLength);
            case UsbDescriptors.OtherSpeedConfigurationType when index == 0 && _otherSpeedConfiguration is not null:
                return Reply(_otherSpeedConfiguration, data, out actualLength);
            case UsbDescriptors.DeviceType:
            case UsbDescriptors.ConfigurationType:
            case UsbDescriptors.StringType:
            case UsbDescriptors.DeviceQualifierType:
            case UsbDescriptors.OtherSpeedConfigurationType:
                return UrbStatus.Epipe;
            default:
                // BOS (USB 2.0 devices have none), class descriptors: the subclass decides.
                return OnControlLocked(setup, data, out actualLength);
        }
    }

    private int SetConfigurationLocked(int configurationValue)
    {
        if (_unplugged)
        {
            return UrbStatus.Enodev;
        }

        // usbfs takes -1 for "unconfigured" as well as 0.
        if (configurationValue < 0)
        {
            configurationValue = 0;
        }

        if (configurationValue != 0 && configurationValue != _configuration[5])
        {
            return UrbStatus.Einval;
        }

        KillPendingLocked(UrbStatus.Eshutdown, -1);
        _configurationValue = (byte)configurationValue;
        Array.Clear(_altSetting);
        Array.Clear(_halted);
        RebuildActiveEndpointsLocked();
        OnConfigurationChangedLocked();
        return 0;
    }

    private int SetInterfaceLocked(int interfaceNumber, int alternateSetting)
    {
        if (_unplugged)
        {
            return UrbStatus.Enodev;
        }

        if (_configurationValue == 0 || interfaceNumber < 0 || interfaceNumber >= _altCount.Length || _altCount[interfaceNumber] == 0)
        {
            return UrbStatus.Enoent;
        }

        if (alternateSetting < 0 || alternateSetting >= _altCount[interfaceNumber])
        {
            return UrbStatus.Einval;
        }

        for (int i = 0; i < _activeType.Length; i++)
        {
            if (_activeType[i] != NoEndpoint && _activeInterface[i] == interfaceNumber)
            {
                KillPendingLocked(UrbStatus.Eshutdown, i);
                _halted[i] = false;
            }
        }

        _altSetting[interfaceNumber] = (byte)alternateSetting;
        RebuildActiveEndpointsLocked();
        return 0;
    }

    private int ClearHaltLocked(byte endpoint)
    {
        if (_unplugged)
        {
            return UrbStatus.Enodev;
        }

        if ((endpoint & ~0x8F) != 0)
        {
            return UrbStatus.Einval;
        }

        if ((endpoint & 0x0F) == 0)
        {
            return 0;
        }

        int index = EndpointIndex(endpoint);
        if (_activeType[index] == NoEndpoint)
        {
            return UrbStatus.Enoent;
        }

        _halted[index] = false;
        OnClearHaltLocked(endpoint);
        return 0;
    }

    // endpointIndex -1 kills everything pending.
    private void KillPendingLocked(int status, int endpointIndex)
    {
        for (int i = 0; i < _pending.Count;)
        {
            UsbTransfer transfer = _pending[i];
            if (endpointIndex < 0 || EndpointIndex(transfer.Endpoint) == endpointIndex)
            {
                RemovePendingAtLocked(i);
                CompleteLocked(transfer, status, 0);
            }
            else
            {
                i++;
            }
        }
    }

    private void RemovePendingAtLocked(int index)
    {
        UsbTransfer transfer = _pending[index];
        _pending.RemoveAt(index);
        if (transfer.Type != UsbTransferType.Isochronous)
        {
            return;
        }

        for (int i = 0; i < _isoQueue.Count; i++)
        {
            if (_isoQueue[i].Transfer == transfer)
            {
                _isoQueue.RemoveAt(i);
                return;
            }
        }
    }

    // usbfs's and usbcore's submit checks (devio.c proc_do_submiturb, urb.c usb_submit_urb), then the
    // schedule: ISO_ASAP puts the transfer in the first frame free on its endpoint, on an interval boundary.
    private int ScheduleIsochronousLocked(UsbTransfer transfer, int index)
    {
        int packets = transfer.NumberOfPackets;
        if (packets < 1 || packets > UsbTransfer.MaxIsoPackets)
        {
            return UrbStatus.Einval;
        }

        int maxPacket = _activeMaxPacket[index] * (Speed == UsbSpeed.High ? 1 + _activeMult[index] : 1);
        long total = 0;
        for (int i = 0; i < packets; i++)
        {
            int length = transfer.IsoPackets[i].Length;
            if (length < 0 || length > MaxIsoPacketLength)
            {
                return UrbStatus.Einval;
            }

            total += length;
        }

        if (total > transfer.Capacity)
        {
            // usbfs takes the packets' sum as the length and would read or write past the buffer.
            return UrbStatus.Efault;
        }

        for (int i = 0; i < packets; i++)
        {
            if (transfer.IsoPackets[i].Length > maxPacket)
            {
                return UrbStatus.Emsgsize;
            }
        }

        for (int i = 0; i < packets; i++)
        {
            transfer.IsoPackets[i].ActualLength = 0;
            transfer.IsoPackets[i].Status = UrbStatus.Exdev;
        }

        transfer.ErrorCount = 0;
        long interval = 1L << (Math.Clamp((int)_activeInterval[index], 1, 16) - 1);
        long start = FrameNumber + 1;
        foreach (IsoEntry queued in _isoQueue)
        {
            if (EndpointIndex(queued.Transfer.Endpoint) == index)
            {
                start = Math.Max(start, queued.NextFree);
            }
        }

        start = (start + interval - 1) / interval * interval;
        var entry = new IsoEntry(transfer, start, interval, start + ((packets - 1) * interval) + 1, start + (packets * interval));
        _isoQueue.Add(entry);
        ArmIsoTimerLocked(entry.DoneFrame);
        return Pending;
    }

    private void ArmIsoTimerLocked(long frame)
    {
        if (frame >= _isoTimerFrame || _unplugged)
        {
            return;
        }

        _isoTimerFrame = frame;
        _isoTimer ??= _time.CreateTimer(static s => ((EmulatedUsbDevice)s!).OnIsoTimer(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        // Whole milliseconds, rounded up: a timer that fires early would spin until the frame is over.
        long remaining = (frame * FramePeriod.Ticks) - _time.GetElapsedTime(_frameOrigin).Ticks;
        long milliseconds = remaining <= 0 ? 0 : (remaining + TimeSpan.TicksPerMillisecond - 1) / TimeSpan.TicksPerMillisecond;
        _isoTimer.Change(TimeSpan.FromMilliseconds(milliseconds), Timeout.InfiniteTimeSpan);
    }

    private void OnIsoTimer()
    {
        lock (_lock)
        {
            _isoTimerFrame = long.MaxValue;
            long now = FrameNumber;
            long next = long.MaxValue;
            for (int i = 0; i < _isoQueue.Count;)
            {
                IsoEntry entry = _isoQueue[i];
                if (entry.DoneFrame > now)
                {
                    next = Math.Min(next, entry.DoneFrame);
                    i++;
                    continue;
                }

                _isoQueue.RemoveAt(i);
                _pending.Remove(entry.Transfer);
                ServeIsochronousLocked(entry);
            }

            if (next != long.MaxValue)
            {
                ArmIsoTimerLocked(next);
            }
        }

        FlushCompletions();
    }

    private void ServeIsochronousLocked(IsoEntry entry)
    {
        UsbTransfer transfer = entry.Transfer;
        Span<byte> bytes = transfer.Bytes;
        int offset = 0;
        int actual = 0;
        int errors = 0;
        for (int i = 0; i < transfer.NumberOfPackets; i++)
        {
            ref UsbIsoPacket packet = ref transfer.IsoPackets[i];
            Span<byte> data = bytes.Slice(offset, packet.Length);
            if (transfer.IsIn)
            {
                // usbfs clears an IN buffer, so what a short packet leaves is zeros.
                data.Clear();
            }

            int status = OnIsochronousPacketLocked(transfer.Endpoint, entry.StartFrame + (i * entry.Interval), data, out int moved);
            packet.ActualLength = Math.Clamp(moved, 0, packet.Length);
            packet.Status = status;
            actual += packet.ActualLength;
            errors += status != UrbStatus.Success ? 1 : 0;
            offset += packet.Length;
        }

        transfer.ErrorCount = errors;
        CompleteLocked(transfer, UrbStatus.Success, actual);
    }

    private void RebuildActiveEndpointsLocked()
    {
        Array.Fill(_activeType, NoEndpoint);
        Array.Clear(_activeMaxPacket);
        if (_configurationValue == 0)
        {
            return;
        }

        foreach (EndpointEntry entry in _endpoints)
        {
            if (_altSetting[entry.Interface] == entry.AlternateSetting)
            {
                int index = EndpointIndex(entry.Address);
                _activeType[index] = entry.Type;
                _activeMaxPacket[index] = entry.MaxPacketSize;
                _activeMult[index] = entry.Mult;
                _activeInterval[index] = entry.Interval;
                _activeInterface[index] = entry.Interface;
            }
        }
    }

    private readonly record struct EndpointEntry(byte Interface, byte AlternateSetting, byte Address, byte Type, ushort MaxPacketSize, byte Mult, byte Interval);

    // DoneFrame: the frame after the last packet's, when the transfer completes; NextFree: the endpoint's next slot.
    private readonly record struct IsoEntry(UsbTransfer Transfer, long StartFrame, long Interval, long DoneFrame, long NextFree);
}
