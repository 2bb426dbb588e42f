using XenPvUsb.Simulation.Devices;
using XenPvUsb.Usb;

namespace XenPvUsb.Tests.Devices;

[TestFixture]
public sealed class EmulatedHubTests
{
    [Test]
    public void Hub_HasClass9AndFourPorts()
    {
        using var hub = new EmulatedHub();
        byte[] device = UsbTestIo.GetDescriptor(hub, 1, 0, 18);

        Assert.That(device[4], Is.EqualTo(9));
        Assert.That(hub.MaxChild, Is.EqualTo(4));
        Assert.That(hub.Serial, Is.Null);
    }

    [Test]
    public void HubDescriptor_ReportsFourPorts()
    {
        using var hub = new EmulatedHub();
        hub.SetConfiguration(1);
        UsbTransfer transfer = UsbTestIo.Control(hub, new TransferRecorder(), 0xA0, 0x06, 0x2900, 0, 9);

        Assert.That(transfer.Status, Is.Zero);
        Assert.That(transfer.Buffer[8 + 1], Is.EqualTo(0x29));
        Assert.That(transfer.Buffer[8 + 2], Is.EqualTo(4));
    }

    [Test]
    public void StatusChangeEndpoint_NeverReports()
    {
        using var hub = new EmulatedHub();
        hub.SetConfiguration(1);
        UsbTransfer transfer = UsbTestIo.Data(hub, new TransferRecorder(), UsbTransferType.Interrupt, 0x81, 1);

        Assert.That(transfer.Tag, Is.Zero);
        hub.Cancel(transfer);
        Assert.That(transfer.Status, Is.EqualTo(UrbStatus.Enoent));
    }
}
