using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using XenPvUsb.Host;
using XenPvUsb.Logging;
using XenPvUsb.Tests.Devices;
using XenPvUsb.Toolstack;
using XenPvUsb.Usb;
using XenPvUsb.Xen;

namespace XenPvUsb.Tests.Toolstack;

/// <summary>The USB policy file, dom0's own devices, and the audit trail's journal entries.</summary>
[TestFixture]
public sealed class UsbPolicyTests
{
    private static UsbDeviceInfo Device(ushort vid = 0x0781, ushort pid = 0x5581, byte deviceClass = 0, string busId = "1-1") =>
        new(busId, 1, 2, vid, pid, deviceClass, UsbSpeed.High, deviceClass == 9 ? 4 : 0, "Maker", "Thing", "SN1");

    private static readonly UsbInterfaceClass[] s_storage = [new(8, 6, 0x50)];
    private static readonly UsbInterfaceClass[] s_keyboard = [new(3, 1, 1)];

    [Test]
    public void FirstMatchingLineDecides_AndNoMatchIsDenied()
    {
        (UsbPolicy policy, IReadOnlyList<string> errors) = UsbPolicy.Parse(
            "# comment\nALLOW:vid=056a pid=0315 class=03 # a tablet\nDENY:class=03\nALLOW:class=08 subclass=06\n");
        Assert.That(errors, Is.Empty);
        Assert.That(policy.Evaluate(Device(0x056a, 0x0315), s_keyboard), Is.EqualTo(new PolicyVerdict(true, 2, "allowed by policy line 2 (ALLOW:vid=056a pid=0315 class=03)")));
        Assert.That(policy.Evaluate(Device(0x046d, 0xc31c), s_keyboard).Allowed, Is.False);
        Assert.That(policy.Evaluate(Device(0x046d, 0xc31c), s_keyboard).Line, Is.EqualTo(3));
        Assert.That(policy.Evaluate(Device(), s_storage).Allowed, Is.True);
        PolicyVerdict unmatched = policy.Evaluate(Device(), [new(0xff, 0, 0)]);
        Assert.That(unmatched.Allowed, Is.False);
        Assert.That(unmatched.Reason, Does.Contain("default deny"));
    }

    [Test]
    public void ClassSubclassAndProtocol_MustHoldForOneInterface_AndClassAlsoMatchesTheDeviceClass()
    {
        UsbPolicy policy = UsbPolicy.Parse("DENY:class=03 prot=01\nDENY:class=09\nALLOW:\n").Policy;
        Assert.That(policy.Evaluate(Device(), s_keyboard).Allowed, Is.False, "a boot keyboard");
        Assert.That(policy.Evaluate(Device(), [new(3, 0, 0), new(8, 6, 1)]).Allowed, Is.True, "protocol 1 on a non-HID interface does not count");
        Assert.That(policy.Evaluate(Device(deviceClass: 9), []).Allowed, Is.False, "the device class counts for class=");
    }

    [Test]
    public void BuiltInPolicy_DeniesHubsOnly()
    {
        Assert.That(UsbPolicy.BuiltIn.Evaluate(Device(deviceClass: 9), []).Allowed, Is.False);
        Assert.That(UsbPolicy.BuiltIn.Evaluate(Device(), s_keyboard), Is.EqualTo(new PolicyVerdict(true, 0, "allowed by the built-in policy (ALLOW:)")));
        using var dir = new TempDirectory();
        Assert.That(UsbPolicy.Load(dir.File("absent.conf")).Policy, Is.SameAs(UsbPolicy.BuiltIn));
    }

    [TestCase("PERMIT:class=03", "is not ALLOW: or DENY:")]
    [TestCase("ALLOW class=03", "needs a colon")]
    [TestCase("DENY:class=300", "1 or 2 hex digits")]
    [TestCase("DENY:vid=12345", "1 to 4 hex digits")]
    [TestCase("DENY:color=red", "unknown key")]
    [TestCase("DENY:class=03 class=08", "given twice")]
    public void BadLine_IsReported_AndDeniesFromItsPlace(string line, string message)
    {
        (UsbPolicy policy, IReadOnlyList<string> errors) = UsbPolicy.Parse($"ALLOW:class=08\n{line}\nALLOW:\n");
        Assert.That(errors, Has.Count.EqualTo(1));
        Assert.That(errors[0], Does.StartWith("line 2: ").And.Contain(message));
        Assert.That(policy.Evaluate(Device(), s_storage).Allowed, Is.True, "lines before it still decide");
        Assert.That(policy.Evaluate(Device(), s_keyboard).Allowed, Is.False, "a broken line never lets anything through");
    }

    [Test]
    public void Interfaces_ComeFromTheDescriptors()
    {
        byte[] d =
        [
            18, 1, 0, 2, 0, 0, 0, 64, 0x81, 0x07, 0x81, 0x55, 0, 1, 1, 2, 3, 1,
            9, 2, 41, 0, 2, 1, 0, 0x80, 50,
            9, 4, 0, 0, 1, 3, 1, 1, 0,
            9, 4, 1, 0, 2, 8, 6, 0x50, 0,
        ];
        Assert.That(UsbPolicy.Interfaces(d), Is.EquivalentTo(new UsbInterfaceClass[] { new(3, 1, 1), new(8, 6, 0x50) }));
        Assert.That(AssignmentFile.InterfaceClasses(d), Is.EquivalentTo(new byte[] { 3, 8 }));
    }

    [Test]
    public void PlannerRefusesWhatThePolicyDenies_EvenForced()
    {
        var stick = new HostDevice(Device(busId: "1-1"), new HashSet<byte> { 8 }, s_storage);
        var domain = new RunningDomain("g", new DomId(3), [new PlannedController(0, 2, [null, null])]);
        UsbPolicy policy = UsbPolicy.Parse("DENY:class=08\nALLOW:\n").Policy;
        AssignmentRule rule = AssignmentFile.ParseRule(["g", "serial=SN1", "force"], 1);
        IReadOnlyList<AssignmentAction> plan = AssignmentPlanner.Plan([rule], [domain], [stick], new HashSet<string>(), policy);
        RefusalAction refusal = plan.OfType<RefusalAction>().Single();
        Assert.That(refusal.ByPolicy, Is.True);
        Assert.That(refusal.Reason, Does.Contain("policy line 1"));
        Assert.That(AssignmentPlanner.Plan([rule], [domain], [stick], new HashSet<string>(), UsbPolicy.BuiltIn).OfType<AttachAction>(), Has.Exactly(1).Items);
    }

    [Test]
    public void Dom0Devices_AreItsBoundHidInputAndTheDisksOfItsSystemMounts()
    {
        using var dir = new TempDirectory();
        string sys = dir.Path;
        string devices = Path.Combine(sys, "bus", "usb", "devices");
        Directory.CreateDirectory(devices);
        string usb1 = Path.Combine(sys, "devices", "pci0000:00", "0000:00:14.0", "usb1");
        // 1-1: a boot keyboard bound to usbhid; 1-2: a tablet (no boot protocol) with an input device; 1-3: a HID
        // device nothing drives; 1-4: the stick / is mounted from, 1-5: a stick under an LVM volume holding /usr.
        MakeDevice(usb1, devices, "1-1", (3, 1, 1, "usbhid", false));
        MakeDevice(usb1, devices, "1-2", (3, 0, 0, "usbhid", true));
        MakeDevice(usb1, devices, "1-3", (3, 1, 2, null, false));
        string disk = MakeDevice(usb1, devices, "1-4", (8, 6, 0x50, "usb-storage", false));
        string lvmDisk = MakeDevice(usb1, devices, "1-5", (8, 6, 0x50, "usb-storage", false));
        string sda1 = Path.Combine(disk, "1-4:1.0", "host0", "target0:0:0", "0:0:0:0", "block", "sda", "sda1");
        string sdb = Path.Combine(lvmDisk, "1-5:1.0", "host1", "target1:0:0", "1:0:0:0", "block", "sdb");
        string dm0 = Path.Combine(sys, "devices", "virtual", "block", "dm-0");
        Directory.CreateDirectory(sda1);
        Directory.CreateDirectory(sdb);
        Directory.CreateDirectory(Path.Combine(dm0, "slaves"));
        Directory.CreateSymbolicLink(Path.Combine(dm0, "slaves", "sdb"), sdb);
        Directory.CreateDirectory(Path.Combine(sys, "dev", "block"));
        Directory.CreateSymbolicLink(Path.Combine(sys, "dev", "block", "8:1"), sda1);
        Directory.CreateSymbolicLink(Path.Combine(sys, "dev", "block", "254:0"), dm0);
        File.WriteAllText(dir.File("mountinfo"),
            "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n" +
            "23 22 254:0 / /usr rw,relatime shared:2 - ext4 /dev/mapper/vg-usr rw\n" +
            "24 22 0:21 / /run rw,nosuid shared:3 - tmpfs tmpfs rw\n" +
            "25 22 8:17 / /srv rw - ext4 /dev/sdb1 rw\n");

        IReadOnlyDictionary<string, string> needed = Dom0Devices.Detect(sys, dir.File("mountinfo"));
        Assert.That(needed.Keys, Is.EquivalentTo(new[] { "1-1", "1-2", "1-4", "1-5" }));
        Assert.That(needed["1-1"], Is.EqualTo("dom0's keyboard"));
        Assert.That(needed["1-2"], Is.EqualTo("dom0's input device"));
        Assert.That(needed["1-4"], Is.EqualTo("dom0's disk for /"));
        Assert.That(needed["1-5"], Is.EqualTo("dom0's disk for /usr"));
    }

    private static string MakeDevice(string usb1, string devices, string busId, (byte Class, byte Sub, byte Prot, string? Driver, bool Input) iface)
    {
        string dir = Path.Combine(usb1, busId);
        Directory.CreateDirectory(dir);
        foreach ((string name, string value) in new[]
        {
            ("busnum", "1"), ("devnum", busId[2..]), ("idVendor", "1234"), ("idProduct", "0001"), ("bDeviceClass", "00"),
            ("speed", "12"), ("maxchild", "0"), ("bConfigurationValue", "1"),
        })
        {
            File.WriteAllText(Path.Combine(dir, name), value + "\n");
        }
        string ifdir = Path.Combine(dir, $"{busId}:1.0");
        Directory.CreateDirectory(ifdir);
        File.WriteAllText(Path.Combine(ifdir, "bInterfaceNumber"), "00\n");
        File.WriteAllText(Path.Combine(ifdir, "bInterfaceClass"), $"{iface.Class:x2}\n");
        File.WriteAllText(Path.Combine(ifdir, "bInterfaceSubClass"), $"{iface.Sub:x2}\n");
        File.WriteAllText(Path.Combine(ifdir, "bInterfaceProtocol"), $"{iface.Prot:x2}\n");
        if (iface.Driver is { } driver)
        {
            File.CreateSymbolicLink(Path.Combine(ifdir, "driver"), $"../../../../bus/usb/drivers/{driver}");
        }
        if (iface.Input)
        {
            Directory.CreateDirectory(Path.Combine(ifdir, "0003:1234:0001.0001", "input", "input5"));
        }
        Directory.CreateSymbolicLink(Path.Combine(devices, busId), dir);
        Directory.CreateSymbolicLink(Path.Combine(devices, $"{busId}:1.0"), ifdir);
        return dir;
    }

    [Test]
    public void AuditEntry_IsTheJournalsNativeFormat_WithNewlinesLengthPrefixed()
    {
        var record = new AuditRecord(AuditAction.Plug, "vusb 3/0 port 1: 1-1 plugged in")
        {
            DomId = new DomId(3),
            Domain = "web",
            DevId = 0,
            Port = 1,
            BusId = "1-1",
            VidPid = "0781:5581",
            Serial = "EVIL\nMESSAGE_ID=forged",
            Rule = "line 2: web serial=X",
        };
        Dictionary<string, string> fields = ParseNative(AuditTrail.Format(record));
        Assert.That(fields["MESSAGE_ID"], Is.EqualTo("5b6a0d2b7c1e4f0a9a3e0c1d2e3f4a03"));
        Assert.That(fields["XENPVUSB_ACTION"], Is.EqualTo("plug"));
        Assert.That(fields["DOMAIN"], Is.EqualTo("web"));
        Assert.That(fields["DOMID"], Is.EqualTo("3"));
        Assert.That(fields["DEVID"], Is.EqualTo("0"));
        Assert.That(fields["PORT"], Is.EqualTo("1"));
        Assert.That(fields["BUSID"], Is.EqualTo("1-1"));
        Assert.That(fields["VID_PID"], Is.EqualTo("0781:5581"));
        Assert.That(fields["SERIAL"], Is.EqualTo("EVIL\nMESSAGE_ID=forged"), "a serial cannot forge a field");
        Assert.That(fields["RULE"], Is.EqualTo("line 2: web serial=X"));
        Assert.That(fields["SYSLOG_IDENTIFIER"], Is.EqualTo("xenpvusbd"));
        Assert.That(fields.ContainsKey("REASON"), Is.False, "fields not known are left out");
        Assert.That(Enum.GetValues<AuditAction>().Select(AuditTrail.MessageId).Distinct().Count(), Is.EqualTo(6));
    }

    [Test]
    public void AuditTrail_SendsEachRecordAsOneDatagram_ToTheJournalSocket()
    {
        using var dir = new TempDirectory();
        string path = dir.File("journal.socket");
        using var journal = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        journal.Bind(new UnixDomainSocketEndPoint(path));
        using var trail = new AuditTrail(NullLogger.Instance, path);
        Assert.That(trail.ToJournal, Is.True);
        trail.Record(new AuditRecord(AuditAction.Refuse, "1-2 not given to web") { BusId = "1-2", Reason = "busy" });
        var buffer = new byte[65536];
        journal.ReceiveTimeout = 5000;
        int n = journal.Receive(buffer);
        Dictionary<string, string> fields = ParseNative(buffer.AsSpan(0, n).ToArray());
        Assert.That(fields["MESSAGE"], Is.EqualTo("1-2 not given to web"));
        Assert.That(fields["MESSAGE_ID"], Is.EqualTo("5b6a0d2b7c1e4f0a9a3e0c1d2e3f4a05"));
        Assert.That(fields["REASON"], Is.EqualTo("busy"));
        Assert.That(fields["PRIORITY"], Is.EqualTo("5"));
        Assert.That(new AuditTrail(NullLogger.Instance, dir.File("none")).ToJournal, Is.False, "no journal: logged only");
    }

    // The journal's reading of the native protocol: NAME=value\n, or NAME\n + u64 LE length + value + \n.
    private static Dictionary<string, string> ParseNative(byte[] data)
    {
        var fields = new Dictionary<string, string>();
        int i = 0;
        while (i < data.Length)
        {
            int nl = Array.IndexOf(data, (byte)'\n', i);
            int eq = Array.IndexOf(data, (byte)'=', i, nl - i);
            if (eq >= 0)
            {
                fields[Encoding.ASCII.GetString(data, i, eq - i)] = Encoding.UTF8.GetString(data, eq + 1, nl - eq - 1);
                i = nl + 1;
                continue;
            }
            string name = Encoding.ASCII.GetString(data, i, nl - i);
            int length = (int)BinaryPrimitives.ReadUInt64LittleEndian(data.AsSpan(nl + 1, 8));
            fields[name] = Encoding.UTF8.GetString(data, nl + 9, length);
            Assert.That(data[nl + 9 + length], Is.EqualTo((byte)'\n'));
            i = nl + 10 + length;
        }
        return fields;
    }
}
