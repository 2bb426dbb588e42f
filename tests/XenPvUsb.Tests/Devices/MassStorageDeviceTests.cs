using System.Buffers.Binary;
using System.Security.Cryptography;
using XenPvUsb.Simulation.Devices;
using XenPvUsb.Usb;

namespace XenPvUsb.Tests.Devices;

[TestFixture]
public sealed class MassStorageDeviceTests
{
    private const long ImageSize = 1024 * 1024;
    private const int Seed = 7;

    private TempDirectory _temp = null!;
    private string _imagePath = null!;
    private MassStorageDevice _device = null!;
    private BotHost _host = null!;

    [SetUp]
    public void SetUp()
    {
        _temp = new TempDirectory();
        _imagePath = _temp.File("stick.img");
        StickImage.Create(_imagePath, ImageSize, Seed);
        _device = new MassStorageDevice(_imagePath);
        Assert.That(_device.SetConfiguration(1), Is.Zero);
        _host = new BotHost(_device);
    }

    [TearDown]
    public void TearDown()
    {
        _device.Unplug();
        _device.Dispose();
        _temp.Dispose();
    }

    [Test]
    public void DeviceDescriptor_DescribesPidCodesHighSpeedStick()
    {
        byte[] d = UsbTestIo.GetDescriptor(_device, 1, 0, 18);

        Assert.That(d, Has.Length.EqualTo(18));
        Assert.That(d[0], Is.EqualTo(18));
        Assert.That(d[1], Is.EqualTo(1));
        Assert.That(BinaryPrimitives.ReadUInt16LittleEndian(d.AsSpan(2)), Is.EqualTo(0x0200), "bcdUSB");
        Assert.That(d[4], Is.Zero, "class per interface");
        Assert.That(d[7], Is.EqualTo(64), "bMaxPacketSize0");
        Assert.That(BinaryPrimitives.ReadUInt16LittleEndian(d.AsSpan(8)), Is.EqualTo(0x1209));
        Assert.That(BinaryPrimitives.ReadUInt16LittleEndian(d.AsSpan(10)), Is.EqualTo(0x5A01));
        Assert.That(d[17], Is.EqualTo(1), "bNumConfigurations");
        Assert.That(_device.Speed, Is.EqualTo(UsbSpeed.High));
    }

    [Test]
    public void Strings_HaveEnglishLanguageTableAndIdentity()
    {
        byte[] languages = UsbTestIo.GetDescriptor(_device, 3, 0, 255);
        Assert.That(languages, Is.EqualTo(new byte[] { 4, 3, 0x09, 0x04 }));

        byte[] d = UsbTestIo.GetDescriptor(_device, 1, 0, 18);
        Assert.That(UsbDescriptors.DecodeString(UsbTestIo.GetDescriptor(_device, 3, d[14], 255, 0x0409)), Is.EqualTo("XenPvUsb"));
        Assert.That(UsbDescriptors.DecodeString(UsbTestIo.GetDescriptor(_device, 3, d[15], 255, 0x0409)), Is.EqualTo("Emulated Stick"));
        Assert.That(UsbDescriptors.DecodeString(UsbTestIo.GetDescriptor(_device, 3, d[16], 255, 0x0409)), Is.EqualTo("XPU0001"));
        Assert.That(_device.Serial, Is.EqualTo("XPU0001"));
    }

    [Test]
    public void ConfigurationBlob_TotalLengthMatches_AndDescribesBulkOnlyTransport()
    {
        byte[] header = UsbTestIo.GetDescriptor(_device, 2, 0, 9);
        int totalLength = BinaryPrimitives.ReadUInt16LittleEndian(header.AsSpan(2));
        byte[] blob = UsbTestIo.GetDescriptor(_device, 2, 0, (ushort)totalLength);

        Assert.That(blob, Has.Length.EqualTo(totalLength));
        Assert.That(totalLength, Is.EqualTo(9 + 9 + 7 + 7));
        Assert.That(blob[4], Is.EqualTo(1), "bNumInterfaces");
        Assert.That(blob[5], Is.EqualTo(1), "bConfigurationValue");
        Assert.That(blob.AsSpan(9, 9).ToArray(), Is.EqualTo(new byte[] { 9, 4, 0, 0, 2, 0x08, 0x06, 0x50, 0 }));
        Assert.That(blob.AsSpan(18, 7).ToArray(), Is.EqualTo(new byte[] { 7, 5, 0x81, 2, 0x00, 0x02, 0 }));
        Assert.That(blob.AsSpan(25, 7).ToArray(), Is.EqualTo(new byte[] { 7, 5, 0x02, 2, 0x00, 0x02, 0 }));
    }

    [Test]
    public void FullSpeed_Uses64BytePackets_AndOtherSpeedConfigurationDescribesHighSpeed()
    {
        using var fullSpeed = new MassStorageDevice(_imagePath, readOnly: true, UsbSpeed.Full);
        byte[] blob = UsbTestIo.GetDescriptor(fullSpeed, 2, 0, 255);
        byte[] other = UsbTestIo.GetDescriptor(fullSpeed, 7, 0, 255);
        byte[] qualifier = UsbTestIo.GetDescriptor(fullSpeed, 6, 0, 10);

        Assert.That(fullSpeed.Speed, Is.EqualTo(UsbSpeed.Full));
        Assert.That(BinaryPrimitives.ReadUInt16LittleEndian(blob.AsSpan(18 + 4)), Is.EqualTo(64));
        Assert.That(other[1], Is.EqualTo(7), "other_speed_configuration type");
        Assert.That(BinaryPrimitives.ReadUInt16LittleEndian(other.AsSpan(18 + 4)), Is.EqualTo(512));
        Assert.That(qualifier, Has.Length.EqualTo(10));
        Assert.That(qualifier[1], Is.EqualTo(6));
        Assert.That(qualifier[8], Is.EqualTo(1), "bNumConfigurations");
        fullSpeed.Unplug();
    }

    [Test]
    public void ShortWLength_ReturnsFirstBytesOfDescriptor()
    {
        byte[] full = UsbTestIo.GetDescriptor(_device, 1, 0, 18);
        byte[] first8 = UsbTestIo.GetDescriptor(_device, 1, 0, 8);
        byte[] serialHead = UsbTestIo.GetDescriptor(_device, 3, 3, 2, 0x0409);

        Assert.That(first8, Is.EqualTo(full[..8]));
        Assert.That(serialHead, Is.EqualTo(new byte[] { 2 + (2 * 7), 3 }));
    }

    [Test]
    public void LongWLength_CompletesShort_OrWithEremoteioWhenShortNotOk()
    {
        var recorder = new TransferRecorder();
        UsbTransfer plain = UsbTestIo.Control(_device, recorder, 0x80, 6, 0x0100, 0, 64);
        UsbTransfer strict = UsbTestIo.Control(_device, recorder, 0x80, 6, 0x0100, 0, 64, shortNotOk: true);

        Assert.That(plain.Status, Is.Zero);
        Assert.That(plain.ActualLength, Is.EqualTo(18));
        Assert.That(strict.Status, Is.EqualTo(UrbStatus.Eremoteio));
        Assert.That(strict.ActualLength, Is.EqualTo(18));
    }

    [TestCase((byte)0x80, (byte)0x06, (ushort)0x0F00, (ushort)0, (ushort)5, TestName = "GetDescriptor_Bos_Stalls")]
    [TestCase((byte)0x80, (byte)0x06, (ushort)0x0309, (ushort)0x0409, (ushort)255, TestName = "GetDescriptor_MissingString_Stalls")]
    [TestCase((byte)0x80, (byte)0x06, (ushort)0x0201, (ushort)0, (ushort)9, TestName = "GetDescriptor_SecondConfiguration_Stalls")]
    [TestCase((byte)0x00, (byte)0x09, (ushort)2, (ushort)0, (ushort)0, TestName = "SetConfiguration_Unknown_Stalls")]
    [TestCase((byte)0x82, (byte)0x0C, (ushort)0, (ushort)0x81, (ushort)2, TestName = "SynchFrame_Stalls")]
    [TestCase((byte)0xC0, (byte)0x01, (ushort)0, (ushort)0, (ushort)4, TestName = "VendorRequest_Stalls")]
    [TestCase((byte)0xA1, (byte)0xFE, (ushort)0, (ushort)1, (ushort)1, TestName = "GetMaxLun_WrongInterface_Stalls")]
    [TestCase((byte)0x00, (byte)0x06, (ushort)0x0100, (ushort)0, (ushort)0, TestName = "GetDescriptor_WrongDirection_Stalls")]
    [TestCase((byte)0x00, (byte)0x03, (ushort)2, (ushort)0, (ushort)0, TestName = "SetFeature_TestMode_Stalls")]
    public void UnsupportedRequest_StallsWithEpipe(byte requestType, byte request, ushort value, ushort index, ushort length)
    {
        UsbTransfer transfer = UsbTestIo.Control(_device, new TransferRecorder(), requestType, request, value, index, length);

        Assert.That(transfer.Status, Is.EqualTo(UrbStatus.Epipe));
        Assert.That(transfer.Tag, Is.EqualTo(1), "completed exactly once");
    }

    [Test]
    public void BeforeSetConfiguration_DataEndpointsFailWithEnoent()
    {
        using var fresh = new MassStorageDevice(_imagePath, readOnly: true);
        var recorder = new TransferRecorder();

        UsbTransfer getConfig = UsbTestIo.Control(fresh, recorder, 0x80, 0x08, 0, 0, 1);
        UsbTransfer bulk = UsbTestIo.Data(fresh, recorder, UsbTransferType.Bulk, 0x02, 31);
        Assert.That(getConfig.Buffer[8], Is.Zero);
        Assert.That(bulk.Status, Is.EqualTo(UrbStatus.Enoent));

        UsbTransfer setConfig = UsbTestIo.Control(fresh, recorder, 0x00, 0x09, 1, 0, 0);
        UsbTransfer getConfigAgain = UsbTestIo.Control(fresh, recorder, 0x80, 0x08, 0, 0, 1);
        Assert.That(setConfig.Status, Is.Zero);
        Assert.That(getConfigAgain.Buffer[8], Is.EqualTo(1));
        Assert.That(fresh.ActiveConfiguration, Is.EqualTo(1));
        fresh.Unplug();
    }

    [Test]
    public void MalformedTransfers_FailLikeUsbfsSubmit()
    {
        var recorder = new TransferRecorder();
        Assert.That(UsbTestIo.Data(_device, recorder, UsbTransferType.Bulk, 0x83, 13).Status, Is.EqualTo(UrbStatus.Enoent), "no such endpoint");
        Assert.That(UsbTestIo.Data(_device, recorder, UsbTransferType.Bulk, 0x01, 13).Status, Is.EqualTo(UrbStatus.Enoent), "wrong direction");
        Assert.That(UsbTestIo.Data(_device, recorder, UsbTransferType.Bulk, 0x41, 13).Status, Is.EqualTo(UrbStatus.Einval), "malformed address");
        Assert.That(UsbTestIo.Data(_device, recorder, UsbTransferType.Interrupt, 0x81, 13).Status, Is.EqualTo(UrbStatus.Einval), "interrupt on bulk");
        Assert.That(UsbTestIo.Data(_device, recorder, UsbTransferType.Control, 0x81, 8).Status, Is.EqualTo(UrbStatus.Einval), "control on bulk");

        var truncated = new UsbTransfer(16) { Type = UsbTransferType.Control, Endpoint = 0x80, Length = 12, Owner = recorder };
        new UsbSetupPacket(0x80, 6, 0x0100, 0, 18).Write(truncated.Buffer);
        _device.Submit(truncated);
        Assert.That(truncated.Status, Is.EqualTo(UrbStatus.Einval), "buffer shorter than 8 + wLength");
    }

    [Test]
    public void HaltedEndpoint_StallsUntilClearHalt()
    {
        var recorder = new TransferRecorder();
        Assert.That(UsbTestIo.Control(_device, recorder, 0x02, 0x03, 0, 0x81, 0).Status, Is.Zero, "SET_FEATURE(ENDPOINT_HALT)");
        UsbTransfer status = UsbTestIo.Control(_device, recorder, 0x82, 0x00, 0, 0x81, 2);
        Assert.That(status.Buffer[8], Is.EqualTo(1), "GET_STATUS reports the halt");
        Assert.That(_host.In(13).Status, Is.EqualTo(UrbStatus.Epipe));
        Assert.That(_host.In(13).Status, Is.EqualTo(UrbStatus.Epipe), "stays halted");

        Assert.That(_device.ClearHalt(0x81), Is.Zero);
        status = UsbTestIo.Control(_device, recorder, 0x82, 0x00, 0, 0x81, 2);
        Assert.That(status.Buffer[8], Is.Zero);

        Assert.That(UsbTestIo.Control(_device, recorder, 0x02, 0x03, 0, 0x02, 0).Status, Is.Zero);
        Assert.That(_host.Out(new byte[31]).Status, Is.EqualTo(UrbStatus.Epipe));
        Assert.That(UsbTestIo.Control(_device, recorder, 0x02, 0x01, 0, 0x02, 0).Status, Is.Zero, "CLEAR_FEATURE(ENDPOINT_HALT) as a control transfer");
        (byte[] data, _, byte csw) = _host.CommandIn([0x12, 0, 0, 0, 36, 0], 36);
        Assert.That(csw, Is.Zero);
        Assert.That(data, Has.Length.EqualTo(36));
    }

    [Test]
    public void Interfaces_AndClearHalt_ValidateNumbers()
    {
        Assert.That(_device.SetInterface(0, 0), Is.Zero);
        Assert.That(_device.SetInterface(0, 1), Is.EqualTo(UrbStatus.Einval));
        Assert.That(_device.SetInterface(1, 0), Is.EqualTo(UrbStatus.Enoent));
        Assert.That(_device.ClearHalt(0x83), Is.EqualTo(UrbStatus.Enoent));
        Assert.That(_device.SetConfiguration(5), Is.EqualTo(UrbStatus.Einval));
        UsbTransfer getInterface = UsbTestIo.Control(_device, new TransferRecorder(), 0x81, 0x0A, 0, 0, 1);
        Assert.That(getInterface.Status, Is.Zero);
        Assert.That(getInterface.ActualLength, Is.EqualTo(1));
    }

    [Test]
    public void GetMaxLun_IsZero_AndMassStorageResetSucceeds()
    {
        var recorder = new TransferRecorder();
        UsbTransfer maxLun = UsbTestIo.Control(_device, recorder, 0xA1, 0xFE, 0, 0, 1);
        UsbTransfer reset = UsbTestIo.Control(_device, recorder, 0x21, 0xFF, 0, 0, 0);

        Assert.That(maxLun.Status, Is.Zero);
        Assert.That(maxLun.ActualLength, Is.EqualTo(1));
        Assert.That(maxLun.Buffer[8], Is.Zero);
        Assert.That(reset.Status, Is.Zero);
    }

    [Test]
    public void Inquiry_ReturnsStandardDataWithVendorAndProduct()
    {
        (byte[] data, uint residue, byte status) = _host.CommandIn([0x12, 0, 0, 0, 36, 0], 36);

        Assert.That(status, Is.Zero);
        Assert.That(residue, Is.Zero);
        Assert.That(data, Has.Length.EqualTo(36));
        Assert.That(data[0], Is.Zero, "direct-access block device");
        Assert.That(data[1], Is.EqualTo(0x80), "removable");
        Assert.That(data[4], Is.EqualTo(31), "additional length");
        Assert.That(System.Text.Encoding.ASCII.GetString(data, 8, 8), Is.EqualTo("XenPvUsb"));
        Assert.That(System.Text.Encoding.ASCII.GetString(data, 16, 16), Is.EqualTo("Emulated Stick  "));
    }

    [Test]
    public void Inquiry_HostExpectsMore_ShortPacketThenStallThenCswWithResidue()
    {
        _host.SendCbw(64, true, [0x12, 0, 0, 0, 64, 0]);
        UsbTransfer data = _host.In(64);
        Assert.That(data.Status, Is.Zero, "short packet ends the data");
        Assert.That(data.ActualLength, Is.EqualTo(36));

        (uint residue, byte status) = _host.ReadCsw();
        Assert.That(status, Is.Zero);
        Assert.That(residue, Is.EqualTo(28));
    }

    [Test]
    public void ReadCapacity_ReportsLastLbaAndBlockSize()
    {
        (byte[] data, _, byte status) = _host.CommandIn([0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8);

        Assert.That(status, Is.Zero);
        Assert.That(BinaryPrimitives.ReadUInt32BigEndian(data), Is.EqualTo((ImageSize / 512) - 1));
        Assert.That(BinaryPrimitives.ReadUInt32BigEndian(data.AsSpan(4)), Is.EqualTo(512));
    }

    [Test]
    public void Read10_ReturnsImageContent()
    {
        (byte[] data, _, byte status) = _host.CommandIn(BotHost.Read10(3, 2), 1024);

        byte[] expected = new byte[1024];
        StickImage.Fill(expected, 3 * 512, Seed);
        Assert.That(status, Is.Zero);
        Assert.That(data, Is.EqualTo(expected));
    }

    [Test]
    public void Write10ThenRead10_RoundTripAcrossMultiUrbDataPhases()
    {
        const uint lba = 1000;
        const int blocks = 256;
        byte[] payload = new byte[blocks * 512];
        StickImage.Fill(payload, 0, 99);

        _host.SendCbw((uint)payload.Length, false, BotHost.Write10(lba, blocks));
        for (int offset = 0; offset < payload.Length; offset += 16384)
        {
            UsbTransfer chunk = _host.Out(payload.AsSpan(offset, 16384));
            Assert.That(chunk.Status, Is.Zero);
            Assert.That(chunk.ActualLength, Is.EqualTo(16384));
        }

        (uint writeResidue, byte writeStatus) = _host.ReadCsw();
        Assert.That(writeStatus, Is.Zero);
        Assert.That(writeResidue, Is.Zero);

        // Read back with Linux's PVUSB-sized URBs (64 KiB) and a smaller tail split.
        _host.SendCbw((uint)payload.Length, true, BotHost.Read10(lba, blocks));
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (int size in new[] { 65536, 32768, 16384, 4096, 4096, 8192 })
        {
            UsbTransfer chunk = _host.In(size, shortNotOk: true);
            Assert.That(chunk.Status, Is.Zero);
            Assert.That(chunk.ActualLength, Is.EqualTo(size));
            hash.AppendData(chunk.Buffer, 0, chunk.ActualLength);
        }

        (uint readResidue, byte readStatus) = _host.ReadCsw();
        Assert.That(readStatus, Is.Zero);
        Assert.That(readResidue, Is.Zero);
        Assert.That(hash.GetHashAndReset(), Is.EqualTo(SHA256.HashData(payload)));

        (byte[] before, _, _) = _host.CommandIn(BotHost.Read10(lba - 1, 1), 512);
        byte[] original = new byte[512];
        StickImage.Fill(original, (lba - 1) * 512, Seed);
        Assert.That(before, Is.EqualTo(original), "neighbouring block untouched");
    }

    [Test]
    public void OutOfRangeLba_FailsWithLbaOutOfRangeSense()
    {
        uint lastLba = (uint)((ImageSize / 512) - 1);
        _host.SendCbw(1024, true, BotHost.Read10(lastLba, 2));
        UsbTransfer data = _host.In(1024);
        Assert.That(data.Status, Is.EqualTo(UrbStatus.Epipe), "no data: the IN pipe stalls");

        (uint residue, byte status) = _host.ReadCsw();
        Assert.That(status, Is.EqualTo(1), "command failed");
        Assert.That(residue, Is.EqualTo(1024));
        Assert.That(_host.RequestSense(), Is.EqualTo(((byte)0x05, (byte)0x21, (byte)0x00)));
        Assert.That(_host.RequestSense(), Is.EqualTo(((byte)0x00, (byte)0x00, (byte)0x00)), "sense is cleared once reported");
    }

    [Test]
    public void UnsupportedOpcode_ChecksConditionWithInvalidCommandSense()
    {
        _host.SendCbw(0, false, [0xE7, 0, 0, 0, 0, 0]);
        (_, byte status) = _host.ReadCsw();

        Assert.That(status, Is.EqualTo(1));
        Assert.That(_host.RequestSense(), Is.EqualTo(((byte)0x05, (byte)0x20, (byte)0x00)));
    }

    [Test]
    public void TestUnitReady_PreventAllowRemoval_AndModeSense_Pass()
    {
        _host.SendCbw(0, false, [0x00, 0, 0, 0, 0, 0]);
        Assert.That(_host.ReadCsw().Status, Is.Zero);
        _host.SendCbw(0, false, [0x1E, 0, 0, 0, 1, 0]);
        Assert.That(_host.ReadCsw().Status, Is.Zero);

        (byte[] mode, _, byte status) = _host.CommandIn([0x1A, 0, 0x3F, 0, 192, 0], 192);
        Assert.That(status, Is.Zero);
        Assert.That(mode.Length, Is.EqualTo(mode[0] + 1), "mode data length");
        Assert.That(mode[2] & 0x80, Is.Zero, "not write-protected");
    }

    [Test]
    public void DataLengthWithoutDataCommand_IsPhaseError()
    {
        _host.SendCbw(0, false, BotHost.Read10(0, 1));

        Assert.That(_host.ReadCsw().Status, Is.EqualTo(2));
    }

    [TestCase(30, 0x43425355u, TestName = "InvalidCbw_WrongLength_StallsBothPipesUntilResetRecovery")]
    [TestCase(31, 0xDEADBEEFu, TestName = "InvalidCbw_BadSignature_StallsBothPipesUntilResetRecovery")]
    public void InvalidCbw_StallsBothPipesUntilResetRecovery(int length, uint signature)
    {
        byte[] cbw = new byte[length];
        BotHost.Cbw(1, 0, false, [0x00, 0, 0, 0, 0, 0]).AsSpan(0, Math.Min(31, length)).CopyTo(cbw);
        BinaryPrimitives.WriteUInt32LittleEndian(cbw, signature);
        Assert.That(_host.Out(cbw).Status, Is.Zero, "the packet itself is accepted");

        Assert.That(_host.In(13).Status, Is.EqualTo(UrbStatus.Epipe));
        Assert.That(_host.Out(new byte[31]).Status, Is.EqualTo(UrbStatus.Epipe));
        Assert.That(_device.ClearHalt(0x81), Is.Zero);
        Assert.That(_host.In(13).Status, Is.EqualTo(UrbStatus.Epipe), "ClearHalt alone is not Reset Recovery");

        // Reset Recovery (usbmassbulk_10 §5.3.4): BOMS reset, then clear both halts.
        Assert.That(UsbTestIo.Control(_device, new TransferRecorder(), 0x21, 0xFF, 0, 0, 0).Status, Is.Zero);
        Assert.That(_device.ClearHalt(0x81), Is.Zero);
        Assert.That(_device.ClearHalt(0x02), Is.Zero);
        (byte[] data, _, byte status) = _host.CommandIn([0x12, 0, 0, 0, 36, 0], 36);
        Assert.That(status, Is.Zero);
        Assert.That(data, Has.Length.EqualTo(36));
    }

    [Test]
    public void CbwForMissingLun_FailsWithLogicalUnitNotSupported()
    {
        _host.Out(BotHost.Cbw(77, 0, false, [0x00, 0, 0, 0, 0, 0], lun: 1));
        UsbTransfer csw = _host.In(13);

        Assert.That(csw.Buffer[12], Is.EqualTo(1));
        Assert.That(BinaryPrimitives.ReadUInt32LittleEndian(csw.Buffer.AsSpan(4)), Is.EqualTo(77), "tag echoed");
        Assert.That(_host.RequestSense().Asc, Is.EqualTo(0x25));
    }

    [Test]
    public void InTransferBeforeCbw_WaitsAndThenCarriesTheCsw()
    {
        UsbTransfer early = _host.In(13);
        Assert.That(early.Tag, Is.Zero, "pending, as a NAKed IN");
        Assert.That(_device.PendingCount, Is.EqualTo(1));

        UsbTransfer cbw = _host.SendCbw(0, false, [0x00, 0, 0, 0, 0, 0]);

        Assert.That(early.Tag, Is.EqualTo(1));
        Assert.That(early.Status, Is.Zero);
        Assert.That(BinaryPrimitives.ReadUInt32LittleEndian(early.Buffer), Is.EqualTo(0x53425355));
        Assert.That(_host.Recorder.Completed, Is.EqualTo(new[] { cbw, early }), "completion order follows the bus");
    }

    [Test]
    public void CancelPendingIn_CompletesWithEnoent_Once()
    {
        UsbTransfer early = _host.In(13);
        _device.Cancel(early);
        _device.Cancel(early);

        Assert.That(early.Status, Is.EqualTo(UrbStatus.Enoent));
        Assert.That(early.Tag, Is.EqualTo(1));
    }

    [Test]
    public void CswIntoTooSmallBuffer_Babbles()
    {
        _host.SendCbw(0, false, [0x00, 0, 0, 0, 0, 0]);

        Assert.That(_host.In(8).Status, Is.EqualTo(UrbStatus.Eoverflow));
    }

    [Test]
    public void ReadOnlyImage_RefusesWritesWithDataProtect()
    {
        byte[] before = SHA256.HashData(File.ReadAllBytes(_imagePath));
        using var readOnly = new MassStorageDevice(_imagePath, readOnly: true);
        readOnly.SetConfiguration(1);
        var host = new BotHost(readOnly);

        (byte[] mode, _, _) = host.CommandIn([0x1A, 0, 0x3F, 0, 4, 0], 4);
        Assert.That(mode[2] & 0x80, Is.EqualTo(0x80), "write-protect bit");

        host.SendCbw(512, false, BotHost.Write10(0, 1));
        UsbTransfer data = host.Out(new byte[512]);
        Assert.That(data.Status, Is.EqualTo(UrbStatus.Epipe), "OUT pipe stalls");
        Assert.That(readOnly.ClearHalt(0x02), Is.Zero);
        (uint residue, byte status) = host.ReadCsw();
        Assert.That(status, Is.EqualTo(1));
        Assert.That(residue, Is.EqualTo(512));
        Assert.That(host.RequestSense(), Is.EqualTo(((byte)0x07, (byte)0x27, (byte)0x00)));
        readOnly.Unplug();
        Assert.That(SHA256.HashData(File.ReadAllBytes(_imagePath)), Is.EqualTo(before), "image unchanged");
    }

    [Test]
    public void ImageNotMultipleOf512_IsRejected()
    {
        string odd = _temp.File("odd.img");
        File.WriteAllBytes(odd, new byte[1000]);

        Assert.That(() => new MassStorageDevice(odd), Throws.ArgumentException);
    }

    [Test]
    public void Unplug_CompletesPendingAndLaterTransfersWithEnodev()
    {
        UsbTransfer waiting = _host.In(13);
        _device.Unplug();

        Assert.That(waiting.Status, Is.EqualTo(UrbStatus.Enodev));
        Assert.That(_host.In(13).Status, Is.EqualTo(UrbStatus.Enodev));
        Assert.That(_device.ClearHalt(0x81), Is.EqualTo(UrbStatus.Enodev));
    }

    [Test]
    public void SetAddress_IsAcceptedWhenItReachesTheDevice_AndGetStatusAnswers()
    {
        var recorder = new TransferRecorder();
        UsbTransfer setAddress = UsbTestIo.Control(_device, recorder, 0x00, 0x05, 9, 0, 0);
        UsbTransfer status = UsbTestIo.Control(_device, recorder, 0x80, 0x00, 0, 0, 2);

        Assert.That(setAddress.Status, Is.Zero);
        Assert.That(_device.Address, Is.EqualTo(9));
        Assert.That(status.Status, Is.Zero);
        Assert.That(status.ActualLength, Is.EqualTo(2));
        Assert.That(status.Buffer[8], Is.Zero, "bus powered, no remote wakeup");
    }

    [Test]
    public void Read10Loop_DoesNotAllocatePerTransfer()
    {
        var recorder = new TransferRecorder();
        var cbw = new UsbTransfer(31) { Type = UsbTransferType.Bulk, Endpoint = 0x02, Length = 31, Owner = recorder };
        BotHost.Cbw(5, 65536, true, BotHost.Read10(0, 128)).CopyTo(cbw.Buffer, 0);
        var data = new UsbTransfer(65536) { Type = UsbTransferType.Bulk, Endpoint = 0x81, Length = 65536, Owner = recorder };
        var csw = new UsbTransfer(13) { Type = UsbTransferType.Bulk, Endpoint = 0x81, Length = 13, Owner = recorder };
        for (int i = 0; i < 3; i++)
        {
            RunRead();
        }

        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 100; i++)
        {
            RunRead();
        }

        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.That(allocated, Is.Zero);
        Assert.That(csw.Status, Is.Zero);
        Assert.That(csw.Buffer[12], Is.Zero);

        void RunRead()
        {
            _device.Submit(cbw);
            _device.Submit(data);
            _device.Submit(csw);
        }
    }
}
