using XenPvUsb.Usb;

namespace XenPvUsb.Tests.Devices;

[TestFixture]
public sealed class UsbTransferIsoTests
{
    [Test]
    public void Packets_LieBackToBack_ByRequestedLength()
    {
        var t = new UsbTransfer(1024) { Type = UsbTransferType.Isochronous, NumberOfPackets = 3 };
        t.IsoPackets[0].Length = 192;
        t.IsoPackets[1].Length = 0;
        t.IsoPackets[2].Length = 100;
        t.Buffer[192] = 0xAB;

        Assert.Multiple(() =>
        {
            Assert.That(t.GetIsoPacketOffset(0), Is.Zero);
            Assert.That(t.GetIsoPacketOffset(1), Is.EqualTo(192));
            Assert.That(t.GetIsoPacketOffset(2), Is.EqualTo(192));
            Assert.That(t.IsoPacketsLength, Is.EqualTo(292));
            Assert.That(t.GetIsoPacketBytes(1).Length, Is.Zero);
            Assert.That(t.GetIsoPacketBytes(2).Length, Is.EqualTo(100));
            Assert.That(t.GetIsoPacketBytes(2)[0], Is.EqualTo(0xAB));
        });
    }

    [Test]
    public void PacketsLength_IsMinusOne_ForAnImpossibleTransfer()
    {
        var t = new UsbTransfer(16) { Type = UsbTransferType.Isochronous };

        Assert.That(t.IsoPacketsLength, Is.EqualTo(-1), "no packets");
        t.NumberOfPackets = UsbTransfer.MaxIsoPackets + 1;
        Assert.That(t.IsoPacketsLength, Is.EqualTo(-1), "more than usbfs takes");
        t.NumberOfPackets = 2;
        t.IsoPackets[1].Length = -4;
        Assert.That(t.IsoPacketsLength, Is.EqualTo(-1), "a negative length");
        Assert.That(() => t.GetIsoPacketOffset(2), Throws.InstanceOf<ArgumentOutOfRangeException>());
    }
}
