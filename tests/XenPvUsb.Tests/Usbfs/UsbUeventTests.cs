using System.Text;
using XenPvUsb.Usb.Usbfs;

namespace XenPvUsb.Tests.Usbfs;

[TestFixture]
public sealed class UsbUeventTests
{
    private static byte[] Datagram(params string[] parts) => Encoding.ASCII.GetBytes(string.Join('\0', parts) + "\0");

    [Test]
    public void DeviceAdd_IsParsed_BusIdFromDevpath()
    {
        byte[] d = Datagram(
            "add@/devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2.3",
            "ACTION=add",
            "DEVPATH=/devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2.3",
            "SUBSYSTEM=usb",
            "MAJOR=189",
            "MINOR=5",
            "DEVNAME=bus/usb/001/006",
            "DEVTYPE=usb_device",
            "PRODUCT=46d/c52b/1201",
            "TYPE=0/0/0",
            "BUSNUM=001",
            "DEVNUM=006",
            "SEQNUM=4242");
        Assert.That(UsbUevent.TryParse(d, out UsbUevent e), Is.True);
        Assert.That(e, Is.EqualTo(new UsbUevent("add", "1-2.3", null, DevNum: 6)), "DEVNUM \"006\" read as 6");
    }

    [Test]
    public void Bind_CarriesTheDriver()
    {
        byte[] d = Datagram("bind@/devices/pci0000:00/0000:00:06.0/usb2/2-1", "ACTION=bind", "DEVPATH=/devices/pci0000:00/0000:00:06.0/usb2/2-1",
            "SUBSYSTEM=usb", "DEVTYPE=usb_device", "DRIVER=usb", "SEQNUM=7");
        Assert.That(UsbUevent.TryParse(d, out UsbUevent e), Is.True);
        Assert.That(e, Is.EqualTo(new UsbUevent("bind", "2-1", "usb")));
    }

    [Test]
    public void Remove_OfARootHub_IsAUsbDevice()
    {
        byte[] d = Datagram("remove@/devices/pci0000:00/0000:00:14.0/usb3", "ACTION=remove", "DEVPATH=/devices/pci0000:00/0000:00:14.0/usb3",
            "SUBSYSTEM=usb", "DEVTYPE=usb_device");
        Assert.That(UsbUevent.TryParse(d, out UsbUevent e), Is.True);
        Assert.That(e.BusId, Is.EqualTo("usb3"));
    }

    [Test]
    public void DevpathMissing_FallsBackToTheHeader()
    {
        byte[] d = Datagram("remove@/devices/x/usb1/1-4", "ACTION=remove", "SUBSYSTEM=usb", "DEVTYPE=usb_device");
        Assert.That(UsbUevent.TryParse(d, out UsbUevent e), Is.True);
        Assert.That(e.BusId, Is.EqualTo("1-4"));
    }

    [TestCase("DEVTYPE=usb_interface", "SUBSYSTEM=usb", TestName = "Interface_IsIgnored")]
    [TestCase("DEVTYPE=usb_device", "SUBSYSTEM=block", TestName = "OtherSubsystem_IsIgnored")]
    [TestCase("SUBSYSTEM=usb", "X=1", TestName = "NoDevtype_IsIgnored")]
    public void NonUsbDevice_IsIgnored(string a, string b)
    {
        byte[] d = Datagram("add@/devices/x/usb1/1-2/1-2:1.0", "ACTION=add", "DEVPATH=/devices/x/usb1/1-2/1-2:1.0", a, b);
        Assert.That(UsbUevent.TryParse(d, out _), Is.False);
    }

    [Test]
    public void UdevRebroadcast_IsIgnored()
    {
        byte[] d = [.. "libudev\0"u8, 0xfe, 0xed, 0xca, 0xfe, .. Datagram("ACTION=add", "SUBSYSTEM=usb", "DEVTYPE=usb_device", "DEVPATH=/devices/x/usb1/1-2")];
        Assert.That(UsbUevent.TryParse(d, out _), Is.False);
    }

    [TestCase("")]
    [TestCase("\0\0\0")]
    [TestCase("garbage without nul")]
    [TestCase("add@/devices/x/usb1/1-2")]
    public void Junk_IsIgnored(string text) => Assert.That(UsbUevent.TryParse(Encoding.ASCII.GetBytes(text), out _), Is.False);

    [Test]
    public void HostileBusId_IsRefused()
    {
        byte[] d = Datagram("add@/devices/x/..", "ACTION=add", "DEVPATH=/devices/x/..", "SUBSYSTEM=usb", "DEVTYPE=usb_device");
        Assert.That(UsbUevent.TryParse(d, out _), Is.False);
    }
}
