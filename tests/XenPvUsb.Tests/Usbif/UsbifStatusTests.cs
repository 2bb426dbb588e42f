using global::XenPvUsb.Usbif;
using static global::XenPvUsb.Usbif.Usbif;
using U = global::XenPvUsb.Usbif.Usbif;

namespace XenPvUsb.Tests.Usbif;

[TestFixture]
public sealed class UsbifStatusTests
{
    [TestCase(0, U.USBIF_STATUS_OK)]
    [TestCase(-19, U.USBIF_STATUS_NODEV)]
    [TestCase(-22, U.USBIF_STATUS_INVAL)]
    [TestCase(-32, U.USBIF_STATUS_STALL)]
    [TestCase(-75, U.USBIF_STATUS_BABBLE)]
    [TestCase(-71, U.USBIF_STATUS_IOERROR)]
    [TestCase(-84, U.USBIF_STATUS_IOERROR)]
    [TestCase(-62, U.USBIF_STATUS_IOERROR)]
    [TestCase(-110, U.USBIF_STATUS_IOERROR)]
    [TestCase(-121, U.USBIF_STATUS_IOERROR)]
    [TestCase(-2, U.USBIF_STATUS_SHUTDOWN)]
    [TestCase(-104, U.USBIF_STATUS_SHUTDOWN)]
    [TestCase(-108, U.USBIF_STATUS_SHUTDOWN)]
    [TestCase(-12345, U.USBIF_STATUS_SHUTDOWN)]
    public void LinuxStatus_MapsToUsbif(int linux, int usbif)
    {
        Assert.That(UsbifStatus.FromLinuxStatus(linux), Is.EqualTo(usbif));
    }

    [Test]
    public void OnlyDefinedValuesReachTheRing()
    {
        int[] defined = [USBIF_STATUS_OK, USBIF_STATUS_NODEV, USBIF_STATUS_INVAL, USBIF_STATUS_STALL, USBIF_STATUS_IOERROR, USBIF_STATUS_BABBLE, USBIF_STATUS_SHUTDOWN];
        for (int errno = 0; errno < 200; errno++)
        {
            Assert.That(defined, Does.Contain(UsbifStatus.FromLinuxStatus(-errno)), $"errno {errno}");
        }
    }
}
