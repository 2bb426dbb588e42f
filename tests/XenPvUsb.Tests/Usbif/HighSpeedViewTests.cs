using System.Buffers.Binary;
using CsCheck;
using XenPvUsb.Usb;

namespace XenPvUsb.Tests.Usbif;

/// <summary>
/// SuperSpeed descriptors shown at high speed. The byte strings are QEMU's usb-storage at SuperSpeed
/// (hw/usb/dev-storage.c: bcdUSB 3.00, ep0 2^9, two bulk endpoints of 1024 with a companion each) and a
/// SuperSpeed UVC-style streaming interface (isochronous IN with burst and mult, an interrupt IN).
/// </summary>
[TestFixture]
public sealed class HighSpeedViewTests
{
    private static readonly byte[] s_ssStickDevice = Convert.FromHexString("12010003000000" + "09" + "F446" + "0100" + "0000" + "01020301");

    private static readonly byte[] s_ssStickConfig = Convert.FromHexString(
        "09022C0001010080" + "32" + // 44 bytes, 1 interface, bMaxPower 50 (400 mA in SuperSpeed's 8 mA units)
        "090400000208065000" + // interface 0: mass storage, SCSI, bulk-only
        "07058102000400" + "06300F000000" + // bulk IN 1024 + companion (burst 16)
        "07050202000400" + "06300F000000"); // bulk OUT 1024 + companion

    private static readonly byte[] s_hsStickConfig = Convert.FromHexString(
        "0902200001010080C8" + "090400000208065000" + "07058102000200" + "07050202000200");

    [Test]
    public void Device_BecomesUsb2_With64ByteEp0()
    {
        byte[] hs = HighSpeedView.Device(s_ssStickDevice)!;
        Assert.That(Convert.ToHexString(hs), Is.EqualTo("12010002000000" + "40" + "F446" + "0100" + "0000" + "01020301"));
        Assert.That(BinaryPrimitives.ReadUInt16LittleEndian(hs.AsSpan(2)), Is.EqualTo(0x0200));
        Assert.That(hs[7], Is.EqualTo(64));
        Assert.That(HighSpeedView.Device(s_ssStickDevice.AsSpan(0, 8)), Is.Null, "8 bytes are not a device descriptor");
        Assert.That(HighSpeedView.Device(s_ssStickConfig), Is.Null);
    }

    [Test]
    public void DeviceQualifier_IsWhatAHighSpeedDeviceAnswers()
    {
        byte[] q = HighSpeedView.DeviceQualifier(HighSpeedView.Device(s_ssStickDevice)!);
        Assert.That(Convert.ToHexString(q), Is.EqualTo("0A060002000000400100"));
    }

    [Test]
    public void StickConfiguration_LosesItsCompanions_BulkIs512_TotalLengthMatches()
    {
        byte[] hs = HighSpeedView.Configuration(s_ssStickConfig)!;
        Assert.That(Convert.ToHexString(hs), Is.EqualTo(Convert.ToHexString(s_hsStickConfig)));
        Assert.That(BinaryPrimitives.ReadUInt16LittleEndian(hs.AsSpan(2)), Is.EqualTo(hs.Length));
    }

    /// <summary>
    /// A UAS bridge's SuperSpeed configuration, laid out as lsusb -v shows the common ones (ASMedia ASM1153E,
    /// 174c:55aa): alternate setting 0 bulk-only, alternate setting 1 UAS (protocol 0x62) with four bulk endpoints,
    /// each with a companion (the three data and status pipes with 2^4 streams) and a pipe usage descriptor
    /// (class-specific, type 0x24) after it; bMaxPower 112 (896 mA).
    /// </summary>
    private static readonly byte[] s_ssUasConfig = Convert.FromHexString(
        "0902790001010080" + "70" +
        "090400000208065000" + "07058102000400" + "06300F000000" + "07050202000400" + "06300F000000" +
        "090401000408066200" +
        "07058102000400" + "06300F040000" + "04240200" + // status IN, pipe usage 2
        "07050202000400" + "06300F040000" + "04240400" + // data OUT, pipe usage 4
        "07058302000400" + "06300F040000" + "04240300" + // data IN, pipe usage 3
        "07050402000400" + "063000000000" + "04240100"); // command OUT, pipe usage 1

    [Test]
    public void UasBridgeConfiguration_KeepsBothAlternateSettingsAndPipeUsage_WithoutCompanions()
    {
        Assert.That(BinaryPrimitives.ReadUInt16LittleEndian(s_ssUasConfig.AsSpan(2)), Is.EqualTo(s_ssUasConfig.Length), "the test's own bytes");
        byte[] hs = HighSpeedView.Configuration(s_ssUasConfig)!;
        string expected =
            "0902550001010080" + "FA" +
            "090400000208065000" + "07058102000200" + "07050202000200" +
            "090401000408066200" +
            "07058102000200" + "04240200" +
            "07050202000200" + "04240400" +
            "07058302000200" + "04240300" +
            "07050402000200" + "04240100";
        Assert.That(Convert.ToHexString(hs), Is.EqualTo(expected));
        Assert.That(BinaryPrimitives.ReadUInt16LittleEndian(hs.AsSpan(2)), Is.EqualTo(hs.Length));
    }

    [Test]
    public void MaxPower_IsIn2mAUnits_AtMost500mA()
    {
        byte[] ss = (byte[])s_ssStickConfig.Clone();
        ss[8] = 112; // 896 mA at SuperSpeed
        Assert.That(HighSpeedView.Configuration(ss)![8], Is.EqualTo(250));
        ss[8] = 12; // 96 mA
        Assert.That(HighSpeedView.Configuration(ss)![8], Is.EqualTo(48));
    }

    [Test]
    public void IsochronousAndInterrupt_TakeTheCompanionsBytesPerInterval_InHighSpeedEncoding()
    {
        byte[] ss = Convert.FromHexString(
            "09025400020100" + "80FA" +
            "090400000" + "10E010000" + "07058303080008" + "063000000800" + // interrupt IN 8 bytes, companion: 8 per interval
            "090401000" + "00E020000" + // streaming, alt 0: no endpoints
            "090401010" + "10E020000" + "07058105000401" + "06300201000C" + // iso IN 1024, burst 2, mult 1, 3072 per interval
            "090401020" + "10E020000" + "07058105000401" + "063003020000"); // burst 3, mult 2, declared 0: 1024 * 4 * 3 per interval
        byte[] hs = HighSpeedView.Configuration(ss)!;
        List<(int Address, int Type, int MaxPacket)> endpoints = Endpoints(hs);
        Assert.That(endpoints, Has.Count.EqualTo(3));
        Assert.That(endpoints[0], Is.EqualTo((0x83, 3, 8)));
        Assert.That(endpoints[1], Is.EqualTo((0x81, 1, 1024 | (2 << 11))), "3072 bytes: 3 transactions of 1024");
        Assert.That(endpoints[2], Is.EqualTo((0x81, 1, 1024 | (2 << 11))), "beyond 3 x 1024: clamped to what high speed can carry");
        Assert.That(Walk(hs).Any(d => d.Type is 0x30 or 0x31), Is.False);
        Assert.That(BinaryPrimitives.ReadUInt16LittleEndian(hs.AsSpan(2)), Is.EqualTo(hs.Length));
    }

    [Test]
    public void TwoTransactions_UseHalfTheBytesEach()
    {
        byte[] ss = Convert.FromHexString("09021F0001010080" + "00" + "090400000" + "10E020000" + "07058105000401" + "063001000006"); // 1536 per interval
        byte[] hs = HighSpeedView.Configuration(ss)!;
        Assert.That(Endpoints(hs)[0], Is.EqualTo((0x81, 1, 768 | (1 << 11))));
    }

    [Test]
    public void SuperSpeedPlusIsochCompanion_GivesTheBytesPerInterval()
    {
        byte[] ss = Convert.FromHexString("0902270001010080" + "00" + "090400000" + "10E020000" + "07058105000401" + "063000800000" + "0831000000080000"); // 2048
        byte[] hs = HighSpeedView.Configuration(ss)!;
        Assert.That(Endpoints(hs)[0], Is.EqualTo((0x81, 1, 1024 | (1 << 11))));
        Assert.That(hs, Has.Length.EqualTo(9 + 9 + 7));
    }

    [Test]
    public void ABadLength_EndsTheWalk_WithWhatParsedSoFar()
    {
        byte[] ss = (byte[])s_ssStickConfig.Clone();
        ss[9 + 9 + 7 + 6] = 0; // the OUT endpoint's bLength
        byte[] hs = HighSpeedView.Configuration(ss)!;
        Assert.That(hs, Has.Length.EqualTo(9 + 9 + 7));
        Assert.That(BinaryPrimitives.ReadUInt16LittleEndian(hs.AsSpan(2)), Is.EqualTo(hs.Length));
        ss = (byte[])s_ssStickConfig.Clone();
        BinaryPrimitives.WriteUInt16LittleEndian(ss.AsSpan(2), 200); // wTotalLength beyond what the device gave
        Assert.That(HighSpeedView.Configuration(ss), Is.EqualTo(s_hsStickConfig));
    }

    [Test]
    public void FindConfiguration_InUsbfsReadOutput()
    {
        byte[] second = (byte[])s_ssStickConfig.Clone();
        second[5] = 2;
        byte[] device = (byte[])s_ssStickDevice.Clone();
        device[17] = 2;
        byte[] all = [.. device, .. s_ssStickConfig, .. second];
        Assert.That(HighSpeedView.FindConfiguration(all, 0).ToArray(), Is.EqualTo(s_ssStickConfig));
        Assert.That(HighSpeedView.FindConfiguration(all, 1).ToArray(), Is.EqualTo(second));
        Assert.That(HighSpeedView.FindConfiguration(all, 2).IsEmpty, Is.True);
        Assert.That(HighSpeedView.FindConfiguration(all.AsSpan(0, all.Length - 1), 1).IsEmpty, Is.True, "a truncated last configuration");
        Assert.That(HighSpeedView.FindConfiguration(s_ssStickConfig, 0).IsEmpty, Is.True, "no device descriptor first");
    }

    [TestCase(0x00, 48, 0, true)] // SET_SEL
    [TestCase(0x00, 49, 0, true)] // SET_ISOCH_DELAY
    [TestCase(0x00, 3, 48, true)] // SET_FEATURE(U1_ENABLE)
    [TestCase(0x00, 1, 49, true)] // CLEAR_FEATURE(U2_ENABLE)
    [TestCase(0x00, 3, 50, true)] // SET_FEATURE(LTM_ENABLE)
    [TestCase(0x01, 3, 0, true)] // SET_FEATURE(FUNCTION_SUSPEND)
    [TestCase(0x80, 6, 0x0f00, true)] // GET_DESCRIPTOR(BOS)
    [TestCase(0x80, 6, 0x0700, true)] // GET_DESCRIPTOR(OTHER_SPEED_CONFIGURATION)
    [TestCase(0x80, 6, 0x0100, false)] // GET_DESCRIPTOR(DEVICE)
    [TestCase(0x00, 3, 1, false)] // SET_FEATURE(DEVICE_REMOTE_WAKEUP)
    [TestCase(0x02, 1, 0, false)] // CLEAR_FEATURE(ENDPOINT_HALT)
    [TestCase(0x21, 48, 0, false)] // a class request with the same number
    public void SuperSpeedOnlyRequests(int bmRequestType, int bRequest, int wValue, bool superSpeedOnly) =>
        Assert.That(HighSpeedView.IsSuperSpeedOnlyRequest((byte)bmRequestType, (byte)bRequest, (ushort)wValue), Is.EqualTo(superSpeedOnly));

    [Test]
    public void AnyBytes_GiveAWellFormedSetOrNull()
    {
        Gen.Byte.Array[0, 300].Select(b =>
        {
            if (b.Length >= 9)
            {
                b[1] = HighSpeedView.ConfigurationType;
            }
            return b;
        }).Sample(bytes =>
        {
            byte[]? hs = HighSpeedView.Configuration(bytes);
            if (hs is null)
            {
                return;
            }
            Assert.That(BinaryPrimitives.ReadUInt16LittleEndian(hs.AsSpan(2)), Is.EqualTo(hs.Length));
            Assert.That(Walk(hs).Sum(d => d.Length), Is.EqualTo(hs.Length - 9), "the descriptors chain to the end");
            Assert.That(Walk(hs).Any(d => d.Type is 0x30 or 0x31), Is.False);
            HighSpeedView.FindConfiguration(bytes, bytes.Length > 0 ? bytes[0] % 4 : 0);
        }, iter: 20_000);
    }

    private static List<(int Type, int Length)> Walk(byte[] config)
    {
        var list = new List<(int, int)>();
        for (int at = 9; at < config.Length; at += config[at])
        {
            Assert.That(config[at], Is.GreaterThanOrEqualTo(2));
            Assert.That(at + config[at], Is.LessThanOrEqualTo(config.Length));
            list.Add((config[at + 1], config[at]));
        }
        return list;
    }

    private static List<(int Address, int Type, int MaxPacket)> Endpoints(byte[] config)
    {
        var list = new List<(int, int, int)>();
        for (int at = 9; at < config.Length; at += config[at])
        {
            if (config[at + 1] == 5)
            {
                list.Add((config[at + 2], config[at + 3] & 3, BinaryPrimitives.ReadUInt16LittleEndian(config.AsSpan(at + 4))));
            }
        }
        return list;
    }
}
