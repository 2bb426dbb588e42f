using global::XenPvUsb.Usbif;
using XenPvUsb.Usb;

namespace XenPvUsb.Tests.Usbif;

[TestFixture]
public sealed class UsbifPipeTests
{
    [Test]
    public void Create_RoundTripsEveryField()
    {
        UsbifPipe p = UsbifPipe.Create(port: 31, device: 127, endpoint: 15, isIn: true, UsbTransferType.Bulk, unlink: true);
        Assert.That(p.Port, Is.EqualTo(31));
        Assert.That(p.Device, Is.EqualTo(127));
        Assert.That(p.Endpoint, Is.EqualTo(15));
        Assert.That(p.IsIn, Is.True);
        Assert.That(p.IsUnlink, Is.True);
        Assert.That(p.Type, Is.EqualTo(UsbTransferType.Bulk));
        Assert.That(p.EndpointAddress, Is.EqualTo(0x8f));
        Assert.That(p.HasReservedBits, Is.False);
    }

    [Test]
    public void Decode_MatchesLinuxPipeEncoding()
    {
        // usb_rcvbulkpipe(dev 5, ep 1) on root port 2: (3 << 30) | (1 << 15) | (5 << 8) | 0x80 | 2
        var p = new UsbifPipe(0xC0008582);
        Assert.That(p.Type, Is.EqualTo(UsbTransferType.Bulk));
        Assert.That(p.Endpoint, Is.EqualTo(1));
        Assert.That(p.Device, Is.EqualTo(5));
        Assert.That(p.IsIn, Is.True);
        Assert.That(p.Port, Is.EqualTo(2));
        Assert.That(p.IsUnlink, Is.False);
    }

    [TestCase(0x40u)]
    [TestCase(0x00080000u)]
    [TestCase(0x20000000u)]
    public void ReservedBits_AreDetected(uint bit)
    {
        Assert.That(new UsbifPipe(bit).HasReservedBits, Is.True);
    }

    [TestCase(UsbTransferType.Isochronous)]
    [TestCase(UsbTransferType.Interrupt)]
    [TestCase(UsbTransferType.Control)]
    [TestCase(UsbTransferType.Bulk)]
    public void Type_DecodesAllFour(UsbTransferType type)
    {
        Assert.That(UsbifPipe.Create(1, 1, 1, false, type).Type, Is.EqualTo(type));
    }
}
