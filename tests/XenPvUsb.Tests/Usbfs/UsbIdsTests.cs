using XenPvUsb.Host;

namespace XenPvUsb.Tests.Usbfs;

[TestFixture]
public sealed class UsbIdsTests
{
    private const string Sample =
        "#\n" +
        "#\tList of USB ID's\n" +
        "# Syntax:\n" +
        "# vendor  vendor_name\n" +
        "#\tdevice  device_name\t\t\t\t<-- single tab\n" +
        "\n" +
        "0001  Fry's Electronics\n" +
        "\t7778  Counterfeit flash drive [Kingston]\n" +
        "046d  Logitech, Inc.\n" +
        "\tc52b  Unifying Receiver\n" +
        "\tc077  M105 Optical Mouse\n" +
        "\t\t00  an interface line\n" +
        "1d6b  Linux Foundation\n" +
        "\t0002  2.0 root hub\n" +
        "\t0003  3.0 root hub\n" +
        "\n" +
        "# List of known device classes, subclasses and protocols\n" +
        "C 00  (Defined at Interface level)\n" +
        "C 03  Human Interface Device\n" +
        "\t01  Boot Interface Subclass\n" +
        "\t\t01  Keyboard\n" +
        "HID 0000  None\n" +
        "L 0409  English\n" +
        "\t01  US\n";

    [Test]
    public void VendorsAndProducts_AreFound()
    {
        UsbIds ids = UsbIds.Parse(new StringReader(Sample));
        Assert.Multiple(() =>
        {
            Assert.That(ids.VendorName(0x046d), Is.EqualTo("Logitech, Inc."));
            Assert.That(ids.ProductName(0x046d, 0xc52b), Is.EqualTo("Unifying Receiver"));
            Assert.That(ids.ProductName(0x1d6b, 0x0003), Is.EqualTo("3.0 root hub"));
            Assert.That(ids.ProductName(0x0001, 0x7778), Is.EqualTo("Counterfeit flash drive [Kingston]"));
            Assert.That(ids.VendorCount, Is.EqualTo(3));
            Assert.That(ids.ProductCount, Is.EqualTo(5));
        });
    }

    [Test]
    public void Unknown_IsNull_AndLaterTablesDoNotLeakIn()
    {
        UsbIds ids = UsbIds.Parse(new StringReader(Sample));
        Assert.Multiple(() =>
        {
            Assert.That(ids.VendorName(0xffff), Is.Null);
            Assert.That(ids.ProductName(0x046d, 0xffff), Is.Null);
            // "\t01  US" under "L 0409" must not become product 0x0001 of the last vendor.
            Assert.That(ids.ProductName(0x1d6b, 0x0001), Is.Null);
        });
    }

    [Test]
    public void Load_TakesTheFirstReadableFile_OrIsEmpty()
    {
        string dir = Path.Combine(Path.GetTempPath(), "xenpvusb-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            string file = Path.Combine(dir, "usb.ids");
            File.WriteAllText(file, Sample);
            Assert.That(UsbIds.Load([Path.Combine(dir, "missing"), file]).VendorName(0x1d6b), Is.EqualTo("Linux Foundation"));
            Assert.That(UsbIds.Load([Path.Combine(dir, "missing")]).VendorCount, Is.Zero);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Test]
    public void System_IsLoadedOnce_EvenWithoutAFile()
    {
        UsbIds first = UsbIds.System;
        Assert.That(UsbIds.System, Is.SameAs(first));
    }
}
