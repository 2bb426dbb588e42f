using XenPvUsb.Host;
using XenPvUsb.Usb;

namespace XenPvUsb.Tests.Devices;

[TestFixture]
public sealed class UsbBusIdTests
{
    private static readonly string[] s_sorted = ["usb1", "1-2", "1-2.1", "1-9", "1-10", "usb2", "2-1"];

    [TestCase("usb1")]
    [TestCase("usb999")]
    [TestCase("1-1")]
    [TestCase("3-1.5")]
    [TestCase("999-255")]
    [TestCase("1-2.3.4.5.6.7")]
    public void IsValidBusId_Accepts(string busId) => Assert.That(UsbSysfs.IsValidBusId(busId), Is.True);

    [TestCase(null)]
    [TestCase("")]
    [TestCase("usb")]
    [TestCase("usb0")]
    [TestCase("usb01")]
    [TestCase("usb1000")]
    [TestCase("1")]
    [TestCase("0-1")]
    [TestCase("1000-1")]
    [TestCase("01-1")]
    [TestCase("1-0")]
    [TestCase("1-01")]
    [TestCase("1-256")]
    [TestCase("1-")]
    [TestCase("-1")]
    [TestCase("1-1.")]
    [TestCase("1-.1")]
    [TestCase("1-1..2")]
    [TestCase("1-2.3.4.5.6.7.1")]
    [TestCase("1-1:1.0")]
    [TestCase("1-1/..")]
    [TestCase("../1-1")]
    [TestCase(" 1-1")]
    [TestCase("1-1\n")]
    [TestCase("1-a")]
    [TestCase("1-1-1")]
    [TestCase("1\u20131")]
    [TestCase("\u0661-1")]
    public void IsValidBusId_Rejects(string? busId) => Assert.That(UsbSysfs.IsValidBusId(busId), Is.False);

    [TestCase("1.5", UsbSpeed.Low)]
    [TestCase("12", UsbSpeed.Full)]
    [TestCase("480", UsbSpeed.High)]
    [TestCase("5000", UsbSpeed.Super)]
    [TestCase("10000", UsbSpeed.SuperPlus)]
    [TestCase("20000", UsbSpeed.SuperPlus)]
    [TestCase("unknown", UsbSpeed.Unknown)]
    public void ParseSpeed_MapsKernelStrings(string text, UsbSpeed speed) =>
        Assert.That(UsbSysfs.ParseSpeed(text), Is.EqualTo(speed));

    [Test]
    public void CompareBusIds_OrdersByBusRootHubFirstThenPortsNumerically()
    {
        string[] ids = ["2-1", "1-10", "usb2", "1-2.1", "1-2", "usb1", "1-9"];

        Array.Sort(ids, UsbSysfs.CompareBusIds);

        Assert.That(ids, Is.EqualTo(s_sorted));
    }
}
