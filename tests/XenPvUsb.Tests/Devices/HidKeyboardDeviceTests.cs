using System.Buffers.Binary;
using XenPvUsb.Simulation.Devices;
using XenPvUsb.Usb;

namespace XenPvUsb.Tests.Devices;

[TestFixture]
public sealed class HidKeyboardDeviceTests
{
    private HidKeyboardDevice _keyboard = null!;
    private TransferRecorder _recorder = null!;

    [SetUp]
    public void SetUp()
    {
        _keyboard = new HidKeyboardDevice();
        Assert.That(_keyboard.SetConfiguration(1), Is.Zero);
        _recorder = new TransferRecorder();
    }

    [TearDown]
    public void TearDown() => _keyboard.Dispose();

    [Test]
    public void Descriptors_DescribeBootKeyboard()
    {
        byte[] device = UsbTestIo.GetDescriptor(_keyboard, 1, 0, 18);
        byte[] config = UsbTestIo.GetDescriptor(_keyboard, 2, 0, 255);

        Assert.That(BinaryPrimitives.ReadUInt16LittleEndian(device.AsSpan(8)), Is.EqualTo(0x1209));
        Assert.That(BinaryPrimitives.ReadUInt16LittleEndian(device.AsSpan(10)), Is.EqualTo(0x5A02));
        Assert.That(config, Has.Length.EqualTo(BinaryPrimitives.ReadUInt16LittleEndian(config.AsSpan(2))));
        Assert.That(config, Has.Length.EqualTo(9 + 9 + 9 + 7));
        Assert.That(config.AsSpan(9, 9).ToArray(), Is.EqualTo(new byte[] { 9, 4, 0, 0, 1, 3, 1, 1, 0 }), "interface 3/1/1");
        Assert.That(config.AsSpan(18, 9).ToArray(), Is.EqualTo(new byte[] { 9, 0x21, 0x11, 0x01, 0, 1, 0x22, 63, 0 }), "HID descriptor");
        Assert.That(config.AsSpan(27, 7).ToArray(), Is.EqualTo(new byte[] { 7, 5, 0x81, 3, 8, 0, 10 }), "interrupt IN, 8 bytes, bInterval 10");
        Assert.That(_keyboard.Speed, Is.EqualTo(UsbSpeed.Full));
    }

    [Test]
    public void ReportDescriptor_IsTheStandardBootKeyboard()
    {
        UsbTransfer transfer = UsbTestIo.Control(_keyboard, _recorder, 0x81, 0x06, 0x2200, 0, 255);

        Assert.That(transfer.Status, Is.Zero);
        Assert.That(transfer.ActualLength, Is.EqualTo(63));
        byte[] descriptor = transfer.Data[..63].ToArray();
        Assert.That(descriptor[..4], Is.EqualTo(new byte[] { 0x05, 0x01, 0x09, 0x06 }), "Generic Desktop / Keyboard");
        Assert.That(descriptor[^1], Is.EqualTo(0xC0));
        Assert.That(descriptor, Is.EqualTo(HidKeyboardDevice.ReportDescriptor.ToArray()));
    }

    [Test]
    public void DeviceQualifier_StallsForFullSpeedOnlyDevice()
    {
        UsbTransfer transfer = UsbTestIo.Control(_keyboard, _recorder, 0x80, 0x06, 0x0600, 0, 10);

        Assert.That(transfer.Status, Is.EqualTo(UrbStatus.Epipe));
    }

    [Test]
    public void LowSpeedKeyboard_ReportsLowSpeed()
    {
        using var lowSpeed = new HidKeyboardDevice(UsbSpeed.Low);

        Assert.That(lowSpeed.Speed, Is.EqualTo(UsbSpeed.Low));
        Assert.That(() => new HidKeyboardDevice(UsbSpeed.High), Throws.InstanceOf<ArgumentOutOfRangeException>());
    }

    [Test]
    public void TypeHi_ProducesPressAndReleaseReportsInOrder()
    {
        _keyboard.Type("hi");
        var reports = new List<byte[]>();
        for (int i = 0; i < 4; i++)
        {
            UsbTransfer transfer = UsbTestIo.Data(_keyboard, _recorder, UsbTransferType.Interrupt, 0x81, 8);
            Assert.That(transfer.Status, Is.Zero);
            Assert.That(transfer.ActualLength, Is.EqualTo(8));
            reports.Add(transfer.Buffer[..8]);
        }

        Assert.That(reports, Is.EqualTo(new[]
        {
            new byte[] { 0, 0, 0x0B, 0, 0, 0, 0, 0 },
            new byte[8],
            new byte[] { 0, 0, 0x0C, 0, 0, 0, 0, 0 },
            new byte[8],
        }));
        Assert.That(_keyboard.QueuedReports, Is.Zero);
    }

    [Test]
    public void ShiftedCharacters_CarryLeftShift()
    {
        _keyboard.Type("H!");
        UsbTransfer h = UsbTestIo.Data(_keyboard, _recorder, UsbTransferType.Interrupt, 0x81, 8);
        UsbTestIo.Data(_keyboard, _recorder, UsbTransferType.Interrupt, 0x81, 8);
        UsbTransfer bang = UsbTestIo.Data(_keyboard, _recorder, UsbTransferType.Interrupt, 0x81, 8);

        Assert.That(h.Buffer[..3], Is.EqualTo(new byte[] { 0x02, 0, 0x0B }));
        Assert.That(bang.Buffer[..3], Is.EqualTo(new byte[] { 0x02, 0, 0x1E }));
    }

    [Test]
    public void Type_RejectsCharactersWithoutAKey()
    {
        Assert.That(() => _keyboard.Type("é"), Throws.ArgumentException);
        Assert.That(_keyboard.QueuedReports, Is.Zero, "nothing queued from a rejected string");
    }

    [Test]
    public void PendingInterruptIn_CompletesWhenTypedOnAnotherThread()
    {
        UsbTransfer transfer = UsbTestIo.Data(_keyboard, _recorder, UsbTransferType.Interrupt, 0x81, 8);
        Assert.That(transfer.Tag, Is.Zero, "waits for a key");

        Task.Run(() => _keyboard.Type("a")).Wait(TimeSpan.FromSeconds(5));

        Assert.That(_recorder.WaitFor(transfer, TimeSpan.FromSeconds(5)), Is.True);
        Assert.That(transfer.Status, Is.Zero);
        Assert.That(transfer.Buffer[2], Is.EqualTo(0x04));
        Assert.That(_keyboard.QueuedReports, Is.EqualTo(1), "the release waits for the next IN");
    }

    [Test]
    public void Cancel_PendingInterruptIn_CompletesWithEnoentOnce()
    {
        UsbTransfer transfer = UsbTestIo.Data(_keyboard, _recorder, UsbTransferType.Interrupt, 0x81, 8);

        _keyboard.Cancel(transfer);
        _keyboard.Cancel(transfer);
        _keyboard.Type("x");

        Assert.That(transfer.Status, Is.EqualTo(UrbStatus.Enoent));
        Assert.That(transfer.Tag, Is.EqualTo(1));
        Assert.That(_keyboard.QueuedReports, Is.EqualTo(2), "a cancelled transfer consumes no report");
    }

    [Test]
    public void InterruptInSmallerThanReport_Babbles()
    {
        _keyboard.Type("a");
        UsbTransfer transfer = UsbTestIo.Data(_keyboard, _recorder, UsbTransferType.Interrupt, 0x81, 4);

        Assert.That(transfer.Status, Is.EqualTo(UrbStatus.Eoverflow));
    }

    [Test]
    public void BulkUrbOnInterruptEndpoint_IsServedAsInterrupt()
    {
        _keyboard.Type("a");
        UsbTransfer transfer = UsbTestIo.Data(_keyboard, _recorder, UsbTransferType.Bulk, 0x81, 8);

        Assert.That(transfer.Status, Is.Zero);
        Assert.That(transfer.Buffer[2], Is.EqualTo(0x04));
    }

    [Test]
    public void SetReport_SetsLeds_AndGetReportReadsThemBack()
    {
        UsbTransfer set = UsbTestIo.Control(_keyboard, _recorder, 0x21, 0x09, 0x0200, 0, 1, [0x02]);
        UsbTransfer get = UsbTestIo.Control(_keyboard, _recorder, 0xA1, 0x01, 0x0200, 0, 1);

        Assert.That(set.Status, Is.Zero);
        Assert.That(_keyboard.Leds, Is.EqualTo(0x02));
        Assert.That(get.Buffer[8], Is.EqualTo(0x02));
    }

    [Test]
    public void GetReportInput_ReturnsCurrentKeyState()
    {
        _keyboard.Type("a");
        UsbTestIo.Data(_keyboard, _recorder, UsbTransferType.Interrupt, 0x81, 8);
        UsbTransfer get = UsbTestIo.Control(_keyboard, _recorder, 0xA1, 0x01, 0x0100, 0, 8);

        Assert.That(get.Status, Is.Zero);
        Assert.That(get.Data.ToArray(), Is.EqualTo(new byte[] { 0, 0, 0x04, 0, 0, 0, 0, 0 }));
    }

    [Test]
    public void IdleAndProtocol_RoundTrip()
    {
        UsbTransfer idleDefault = UsbTestIo.Control(_keyboard, _recorder, 0xA1, 0x02, 0, 0, 1);
        Assert.That(idleDefault.Buffer[8], Is.EqualTo(125), "500 ms default");
        Assert.That(UsbTestIo.Control(_keyboard, _recorder, 0x21, 0x0A, 0x0000, 0, 0).Status, Is.Zero);
        Assert.That(UsbTestIo.Control(_keyboard, _recorder, 0xA1, 0x02, 0, 0, 1).Buffer[8], Is.Zero);

        Assert.That(UsbTestIo.Control(_keyboard, _recorder, 0xA1, 0x03, 0, 0, 1).Buffer[8], Is.EqualTo(1), "report protocol after reset");
        Assert.That(UsbTestIo.Control(_keyboard, _recorder, 0x21, 0x0B, 0, 0, 0).Status, Is.Zero);
        Assert.That(_keyboard.Protocol, Is.Zero);
        Assert.That(UsbTestIo.Control(_keyboard, _recorder, 0x21, 0x0B, 2, 0, 0).Status, Is.EqualTo(UrbStatus.Epipe));

        Assert.That(_keyboard.Reset(), Is.Zero);
        Assert.That(_keyboard.Protocol, Is.EqualTo(1));
        Assert.That(_keyboard.IdleRate, Is.EqualTo(125));
        Assert.That(_keyboard.ActiveConfiguration, Is.EqualTo(1), "reset restores the configuration");
    }

    [Test]
    public void UnknownClassRequest_Stalls()
    {
        Assert.That(UsbTestIo.Control(_keyboard, _recorder, 0xA1, 0x07, 0, 0, 1).Status, Is.EqualTo(UrbStatus.Epipe));
        Assert.That(UsbTestIo.Control(_keyboard, _recorder, 0xA1, 0x01, 0x0300, 0, 8).Status, Is.EqualTo(UrbStatus.Epipe), "feature report");
    }

    [Test]
    public void SetConfiguration_KillsPendingWithEshutdown()
    {
        UsbTransfer transfer = UsbTestIo.Data(_keyboard, _recorder, UsbTransferType.Interrupt, 0x81, 8);

        Assert.That(_keyboard.SetConfiguration(1), Is.Zero);
        Assert.That(transfer.Status, Is.EqualTo(UrbStatus.Eshutdown));
    }

    [Test]
    public void ResubmitFromCompletionCallback_IsServedInOrder()
    {
        var owner = new ResubmittingOwner(_keyboard, 3);
        var first = new UsbTransfer(8) { Type = UsbTransferType.Interrupt, Endpoint = 0x81, Length = 8, Owner = owner };
        _keyboard.Submit(first);

        _keyboard.Type("ab");

        Assert.That(owner.Keys, Is.EqualTo(new byte[] { 0x04, 0x00, 0x05 }));
    }

    private sealed class ResubmittingOwner(HidKeyboardDevice keyboard, int count) : IUsbTransferOwner
    {
        public List<byte> Keys { get; } = [];

        public void OnTransferCompleted(UsbTransfer transfer)
        {
            Keys.Add(transfer.Buffer[2]);
            if (Keys.Count < count)
            {
                keyboard.Submit(transfer);
            }
        }
    }
}
