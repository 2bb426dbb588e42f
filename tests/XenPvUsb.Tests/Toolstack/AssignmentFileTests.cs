using XenPvUsb.Toolstack;
using XenPvUsb.Usb;

namespace XenPvUsb.Tests.Toolstack;

[TestFixture]
public sealed class AssignmentFileTests
{
    private string _dir = null!;
    private string _path = null!;

    [SetUp]
    public void SetUp()
    {
        _dir = Path.Combine(Path.GetTempPath(), "xenpvusb-assign-" + Guid.NewGuid().ToString("N"));
        _path = Path.Combine(_dir, "xenpvusb", "assignments.conf");
    }

    [TearDown]
    public void TearDown()
    {
        if (Directory.Exists(_dir))
        {
            Directory.Delete(_dir, recursive: true);
        }
    }

    private static UsbDeviceInfo Stick(string busId = "3-1.4", ushort vid = 0x0781, ushort pid = 0x5581, string? serial = "4C530001") =>
        new(busId, 3, 7, vid, pid, 0, UsbSpeed.High, 0, "SanDisk", "Ultra", serial);

    [Test]
    public void Parse_ReadsEveryKey_InOrder_AndSkipsCommentsAndBlankLines()
    {
        (IReadOnlyList<AssignmentRule> rules, IReadOnlyList<string> errors) = AssignmentFile.Parse(
            "# header\n\nweb id=0781:5581 serial=4C530001 port=2  # the stick\naudio class=01 controller=1:4 force\ndesk path=3-1.4\n");
        Assert.That(errors, Is.Empty);
        Assert.That(rules, Has.Count.EqualTo(3));
        Assert.That(rules[0], Is.EqualTo(new AssignmentRule("web", new DeviceMatch(0x0781, 0x5581, "4C530001"), 2, null, false, 3)));
        Assert.That(rules[1], Is.EqualTo(new AssignmentRule("audio", new DeviceMatch(InterfaceClass: 1), null, new ControllerSpec(1, 4), true, 4)));
        Assert.That(rules[2].Match.Path, Is.EqualTo("3-1.4"));
    }

    [TestCase("web", "a rule needs at least one of")]
    [TestCase("web id=781:5581", "is not vendor:product")]
    [TestCase("web id=0781:55811", "is not vendor:product")]
    [TestCase("web id=zzzz:5581", "is not vendor:product")]
    [TestCase("web class=1ff", "is not an interface class")]
    [TestCase("web path=usb3 id=0781:*", "is not a physical port path")]
    [TestCase("web path=3-1..4", "is not a physical port path")]
    [TestCase("web id=0781:5581 port=0", "is not 1 to 31")]
    [TestCase("web id=0781:5581 port=32", "is not 1 to 31")]
    [TestCase("web id=0781:5581 controller=3:8", "is not usbver:ports")]
    [TestCase("web id=0781:5581 controller=2:40", "is not usbver:ports")]
    [TestCase("web id=0781:5581 controller=2:4 port=5", "beyond the 4 ports")]
    [TestCase("web id=0781:5581 colour=red", "unknown key 'colour'")]
    [TestCase("web id=0781:5581 forced", "is not key=value")]
    [TestCase("we/b id=0781:5581", "is not a domain name")]
    public void BadLine_IsOneClearError_WithItsLineNumber_AndTheOthersStillApply(string line, string message)
    {
        (IReadOnlyList<AssignmentRule> rules, IReadOnlyList<string> errors) = AssignmentFile.Parse("ok id=1234:5678\n" + line + "\n");
        Assert.That(rules.Select(r => r.Domain), Is.EqualTo(new[] { "ok" }));
        Assert.That(errors, Has.Count.EqualTo(1));
        Assert.That(errors[0], Does.StartWith("line 2: ").And.Contain(message));
    }

    [Test]
    public void Match_NeedsEveryKeyGiven()
    {
        byte[] storage = [8];
        Assert.That(new DeviceMatch(0x0781, 0x5581).Matches(Stick(), storage), Is.True);
        Assert.That(new DeviceMatch(0x0781).Matches(Stick(pid: 0x1234), storage), Is.True, "vendor:*");
        Assert.That(new DeviceMatch(0x0781, 0x5581, "OTHER").Matches(Stick(), storage), Is.False);
        Assert.That(new DeviceMatch(Serial: "4C530001").Matches(Stick(busId: "1-2"), storage), Is.True, "a serial follows the device to any port");
        Assert.That(new DeviceMatch(Path: "3-1.4").Matches(Stick(vid: 0x046d), storage), Is.True, "a path takes whatever is plugged there");
        Assert.That(new DeviceMatch(Path: "3-1.4").Matches(Stick(busId: "3-1.3"), storage), Is.False);
        Assert.That(new DeviceMatch(InterfaceClass: 8).Matches(Stick(), storage), Is.True);
        Assert.That(new DeviceMatch(InterfaceClass: 3).Matches(Stick(), storage), Is.False);
        Assert.That(new DeviceMatch(Serial: "X").Matches(Stick(serial: null), storage), Is.False);
        Assert.That(new DeviceMatch().Matches(Stick(), storage), Is.False, "an empty match takes nothing");
    }

    [Test]
    public void Broad_IsWhatCanTakeDevicesNobodyNamed()
    {
        Assert.That(new DeviceMatch(InterfaceClass: 3).IsBroad, Is.True);
        Assert.That(new DeviceMatch(0x046d).IsBroad, Is.True);
        Assert.That(new DeviceMatch(0x046d, 0xc31c).IsBroad, Is.False);
        Assert.That(new DeviceMatch(Serial: "X", InterfaceClass: 3).IsBroad, Is.False);
        Assert.That(new DeviceMatch(Path: "1-2").IsBroad, Is.False);
    }

    [Test]
    public void AddAndRemove_EditInPlace_KeepingCommentsAndOtherLines()
    {
        Directory.CreateDirectory(Path.GetDirectoryName(_path)!);
        File.WriteAllText(_path, "# mine\nweb id=0781:5581 # stick\n\nbroken line here\n");
        var rule = new AssignmentRule("audio", new DeviceMatch(InterfaceClass: 1), 3);
        Assert.That(AssignmentFile.Add(_path, rule), Is.True);
        Assert.That(AssignmentFile.Add(_path, rule with { Port = 4 }), Is.False, "the same domain and match are there already");
        Assert.That(File.ReadAllText(_path), Is.EqualTo("# mine\nweb id=0781:5581 # stick\n\nbroken line here\naudio class=01 port=3\n"));

        IReadOnlyList<AssignmentRule> removed = AssignmentFile.Remove(_path, "web", new DeviceMatch(0x0781, 0x5581));
        Assert.That(removed.Select(r => r.Line), Is.EqualTo(new[] { 2 }));
        Assert.That(File.ReadAllText(_path), Is.EqualTo("# mine\n\nbroken line here\naudio class=01 port=3\n"));
        Assert.That(AssignmentFile.Remove(_path, "web", null), Is.Empty);
        Assert.That(AssignmentFile.Remove(_path, "audio", null), Has.Count.EqualTo(1));
        (IReadOnlyList<AssignmentRule> rules, IReadOnlyList<string> errors) = AssignmentFile.Load(_path);
        Assert.That(rules, Is.Empty);
        Assert.That(errors, Has.Count.EqualTo(1), "the administrator's broken line stays, reported");
    }

    [Test]
    public void Add_MakesTheFileAndItsDirectory_WithAHeader_AndEveryRuleRoundTrips()
    {
        AssignmentRule[] rules =
        [
            new("web", new DeviceMatch(0x0781, 0x5581, "4C530001"), 1, new ControllerSpec(2, 8)),
            new("cam", new DeviceMatch(0x046d), Force: true),
            new("desk", new DeviceMatch(Path: "3-1.4", InterfaceClass: 0xe0)),
        ];
        foreach (AssignmentRule r in rules)
        {
            Assert.That(AssignmentFile.Add(_path, r), Is.True);
        }
        Assert.That(File.ReadAllText(_path), Does.StartWith("# xenpvusb persistent assignments"));
        (IReadOnlyList<AssignmentRule> back, IReadOnlyList<string> errors) = AssignmentFile.Load(_path);
        Assert.That(errors, Is.Empty);
        Assert.That(back.Select(r => r with { Line = 0 }), Is.EqualTo(rules));
        Assert.That(back[1].Format(), Is.EqualTo("cam id=046d:* force"));
    }

    [Test]
    public void Load_OfAMissingFile_IsNoRules()
    {
        Assert.That(AssignmentFile.Load(_path).Rules, Is.Empty);
    }

    [Test]
    public void InterfaceClasses_AreEveryInterfaceDescriptorsClass_AndFirstMatchTakesTheFirstRule()
    {
        byte[] descriptors = Convert.FromHexString(
            "12010002000000400912" + "0100" + "000101020301" + // device (18 bytes)
            "0902390002010080FA" + "090400000103010100" + "092111010001223F00" + "07058103080008" + // HID interface
            "090401000208065000" + "07058202000200" + "07050202000200"); // mass storage interface
        Assert.That(AssignmentFile.InterfaceClasses(descriptors), Is.EquivalentTo(new byte[] { 3, 8 }));
        Assert.That(AssignmentFile.InterfaceClasses(descriptors.AsSpan(0, 30)), Is.Empty, "a cut descriptor ends the walk");

        AssignmentRule[] rules =
        [
            new("first", new DeviceMatch(InterfaceClass: 8), Line: 1),
            new("second", new DeviceMatch(0x0781, 0x5581), Line: 2),
        ];
        Assert.That(AssignmentFile.FirstMatch(rules, Stick(), AssignmentFile.InterfaceClasses(descriptors))?.Domain, Is.EqualTo("first"));
        Assert.That(AssignmentFile.FirstMatch(rules, Stick(), [])?.Domain, Is.EqualTo("second"));
        Assert.That(AssignmentFile.FirstMatch(rules, Stick(vid: 1), []), Is.Null);
    }
}
