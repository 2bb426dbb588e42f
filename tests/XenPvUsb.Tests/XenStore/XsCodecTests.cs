using System.Text;
using XenPvUsb.Xen;
using XenPvUsb.XenStore;

namespace XenPvUsb.Tests.XenStore;

[TestFixture]
public sealed class XsCodecTests
{
    [Test]
    public void Header_RoundTrips_InHostByteOrder()
    {
        var header = new XsWireHeader(XsMessageType.Write, 0x01020304, 7, 42);
        byte[] bytes = new byte[XsWireHeader.Size];
        header.Write(bytes);

        Assert.That(XsWireHeader.Read(bytes), Is.EqualTo(header));
        Assert.That(bytes[..4], Is.EqualTo(BitConverter.GetBytes(11u)));
        Assert.That(bytes[12..16], Is.EqualTo(BitConverter.GetBytes(42u)));
    }

    [Test]
    public void MessageTypes_HaveWireNumbers()
    {
        Assert.That((uint)XsMessageType.Directory, Is.EqualTo(1));
        Assert.That((uint)XsMessageType.Write, Is.EqualTo(11));
        Assert.That((uint)XsMessageType.WatchEvent, Is.EqualTo(15));
        Assert.That((uint)XsMessageType.Error, Is.EqualTo(16));
        Assert.That((uint)XsMessageType.ResetWatches, Is.EqualTo(21));
        Assert.That((uint)XsMessageType.Invalid, Is.EqualTo(0xFFFF));
    }

    [Test]
    public void Frame_RoundTrips()
    {
        byte[] message = XsCodec.EncodeMessage(XsMessageType.Read, 5, 3, XsCodec.EncodeStrings("/a/b"));

        XsFrameStatus status = XsCodec.TryReadFrame(message, XsCodec.PayloadMax, out XsWireHeader header, out int length);

        Assert.That(status, Is.EqualTo(XsFrameStatus.Complete));
        Assert.That(length, Is.EqualTo(message.Length));
        Assert.That(header, Is.EqualTo(new XsWireHeader(XsMessageType.Read, 5, 3, 5)));
        Assert.That(XsCodec.DecodeStrings(message.AsSpan(XsWireHeader.Size)), Is.EqualTo(new List<string> { "/a/b" }));
    }

    [Test]
    public void Frame_TruncatedHeaderOrPayload_IsIncomplete()
    {
        byte[] message = XsCodec.EncodeMessage(XsMessageType.Read, 5, 0, XsCodec.EncodeStrings("/a/b"));

        Assert.That(XsCodec.TryReadFrame(message.AsSpan(0, 10), XsCodec.PayloadMax, out _, out _), Is.EqualTo(XsFrameStatus.Incomplete));
        Assert.That(XsCodec.TryReadFrame(message.AsSpan(0, message.Length - 1), XsCodec.PayloadMax, out _, out _), Is.EqualTo(XsFrameStatus.Incomplete));
    }

    [Test]
    public void Frame_LengthAbovePayloadMax_IsOversized()
    {
        byte[] bytes = new byte[XsWireHeader.Size];
        new XsWireHeader(XsMessageType.Read, 1, 0, XsCodec.PayloadMax + 1).Write(bytes);

        Assert.That(XsCodec.TryReadFrame(bytes, XsCodec.PayloadMax, out _, out _), Is.EqualTo(XsFrameStatus.Oversized));
    }

    [Test]
    public void Strings_RoundTrip_AndToleratesMissingFinalNul()
    {
        Assert.That(XsCodec.DecodeStrings(XsCodec.EncodeStrings("a", "", "b")), Is.EqualTo(new List<string> { "a", "", "b" }));
        Assert.That(XsCodec.DecodeStrings("x\0y"u8), Is.EqualTo(new List<string> { "x", "y" }));
        Assert.That(XsCodec.DecodeStrings([]), Is.Empty);
        Assert.That(XsCodec.DecodeString("OK\0"u8), Is.EqualTo("OK"));
    }

    [Test]
    public void PathAndValue_HasNoTrailingNul()
    {
        byte[] payload = XsCodec.EncodePathAndValue("/a", "v1"u8);

        Assert.That(payload, Is.EqualTo("/a\0v1"u8.ToArray()));
        Assert.That(XsCodec.TrySplitFirst(payload, out string path, out ReadOnlySpan<byte> rest), Is.True);
        Assert.That(path, Is.EqualTo("/a"));
        Assert.That(Encoding.UTF8.GetString(rest), Is.EqualTo("v1"));
    }

    [TestCase("/", true)]
    [TestCase("/local/domain/0", true)]
    [TestCase("device/vusb/0", true)]
    [TestCase("/a-b_c@d", true)]
    [TestCase("", false)]
    [TestCase("/a/", false)]
    [TestCase("/a//b", false)]
    [TestCase("/a b", false)]
    [TestCase("/a.b", false)]
    [TestCase("@introduceDomain", false)]
    public void Path_Validation(string path, bool valid) =>
        Assert.That(XenStorePath.IsValid(path), Is.EqualTo(valid));

    [Test]
    public void Path_LengthLimits()
    {
        Assert.That(XenStorePath.IsValid("/" + new string('a', XsCodec.AbsPathMax - 1)), Is.True);
        Assert.That(XenStorePath.IsValid("/" + new string('a', XsCodec.AbsPathMax)), Is.False);
        Assert.That(XenStorePath.IsValid(new string('a', XsCodec.RelPathMax)), Is.True);
        Assert.That(XenStorePath.IsValid(new string('a', XsCodec.RelPathMax + 1)), Is.False);
    }

    [Test]
    public void Path_SpecialNames_AllowedOnlyWhenAsked() =>
        Assert.That(XenStorePath.IsValid("@releaseDomain", allowSpecial: true), Is.True);

    [TestCase("r5", XsAccess.Read, (ushort)5)]
    [TestCase("n0", XsAccess.None, (ushort)0)]
    [TestCase("b7", XsAccess.Both, (ushort)7)]
    [TestCase("w3", XsAccess.Write, (ushort)3)]
    [TestCase("r32752", XsAccess.Read, (ushort)32752)]
    public void Permission_RoundTrips(string text, XsAccess access, ushort domid)
    {
        XsPermission permission = XsPermission.Parse(text);

        Assert.That(permission, Is.EqualTo(new XsPermission(access, new DomId(domid))));
        Assert.That(permission.ToString(), Is.EqualTo(text));
    }

    [TestCase("")]
    [TestCase("x1")]
    [TestCase("r")]
    [TestCase("r-1")]
    [TestCase("r70000")]
    [TestCase("r 1")]
    public void Permission_Malformed_Throws(string text) =>
        Assert.That(() => XsPermission.Parse(text), Throws.TypeOf<FormatException>());

    [Test]
    public void ErrorTable_MapsNamesToErrno()
    {
        Assert.That(XsErrorTable.ToErrno("ENOENT"), Is.EqualTo(2));
        Assert.That(XsErrorTable.ToErrno("EACCES"), Is.EqualTo(13));
        Assert.That(XsErrorTable.ToErrno("EAGAIN"), Is.EqualTo(11));
        Assert.That(XsErrorTable.ToErrno("EPERM"), Is.EqualTo(1));
        Assert.That(XsErrorTable.Names.First(), Is.EqualTo("EINVAL"));
        Assert.That(XsErrorTable.Names.Count(), Is.EqualTo(16));
    }
}
