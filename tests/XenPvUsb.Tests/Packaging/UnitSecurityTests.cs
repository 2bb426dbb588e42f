using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;

namespace XenPvUsb.Tests.Packaging;

/// <summary>
/// The systemd unit (packaging/systemd/xenpvusbd.service): its exposure as systemd 252's own
/// `systemd-analyze security --offline=yes` rates it, and the settings the daemon's restart safety
/// relies on. The lab records the same figure in dom0 (stage pvusb/unit-exposure).
/// </summary>
[TestFixture]
public sealed partial class UnitSecurityTests
{
    private const double MaxExposure = 2.5;

    [Test]
    public void Exposure_IsAtMost2Point5()
    {
        string unit = UnitPath();
        string? analyze = FindOnPath("systemd-analyze");
        if (analyze is null)
        {
            Assert.Ignore("systemd-analyze is not installed (Debian: package systemd)");
        }
        var psi = new ProcessStartInfo(analyze!)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (string a in new[] { "security", "--offline=yes", "--no-pager", unit })
        {
            psi.ArgumentList.Add(a);
        }
        using Process p = Process.Start(psi)!;
        string stdout = p.StandardOutput.ReadToEnd();
        string stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Match m = ExposureLine().Match(stdout);
        Assert.That(m.Success, Is.True, $"no overall exposure in the output of systemd-analyze security (exit {p.ExitCode}):\n{stdout}\n{stderr}");
        double exposure = double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
        TestContext.Out.WriteLine($"unit exposure {exposure} ({m.Groups[2].Value})");
        Assert.That(exposure, Is.LessThanOrEqualTo(MaxExposure), $"exposure of {unit}:\n{stdout}");
    }

    [Test]
    public void Unit_CarriesWhatRestartsNeed()
    {
        Dictionary<string, List<string>> s = ServiceSettings(File.ReadAllLines(UnitPath()));
        Assert.That(s.GetValueOrDefault("Type"), Is.EqualTo(new[] { "notify" }));
        Assert.That(s.GetValueOrDefault("NotifyAccess"), Is.EqualTo(new[] { "main" }));
        Assert.That(s.GetValueOrDefault("Restart"), Is.EqualTo(new[] { "on-failure" }));
        Assert.That(s.GetValueOrDefault("WatchdogSec"), Is.EqualTo(new[] { "20s" }), "the loop thread sends WATCHDOG=1");
        Assert.That(s.GetValueOrDefault("RuntimeDirectory"), Is.EqualTo(new[] { "xenpvusb" }), "per-controller recovery state lives in /run/xenpvusb");
        Assert.That(s.GetValueOrDefault("RuntimeDirectoryPreserve"), Is.EqualTo(new[] { "yes" }), "/run/xenpvusb must survive restarts");
        Assert.That(s.GetValueOrDefault("FileDescriptorStoreMax"), Is.EqualTo(new[] { "512" }), "USB port claims are kept in the fd store across restarts");
    }

    [Test]
    public void Unit_HasNoCapabilitiesAndAClosedDevicePolicy()
    {
        Dictionary<string, List<string>> s = ServiceSettings(File.ReadAllLines(UnitPath()));
        Assert.That(s.GetValueOrDefault("CapabilityBoundingSet"), Is.EqualTo(new[] { "" }), "an empty bounding set");
        Assert.That(s.GetValueOrDefault("DevicePolicy"), Is.EqualTo(new[] { "closed" }));
        Assert.That(s.GetValueOrDefault("DeviceAllow"), Is.EquivalentTo(new[]
        {
            "/dev/xen/gntdev rw", "/dev/xen/evtchn rw", "/dev/xen/xenbus rw", "char-usb_device rw",
        }), "only the Xen devices the daemon opens and usbfs");
        Assert.That(s.GetValueOrDefault("RestrictAddressFamilies"), Is.EqualTo(new[] { "AF_UNIX AF_NETLINK" }));
        Assert.That(s.GetValueOrDefault("NoNewPrivileges"), Is.EqualTo(new[] { "yes" }));
        Assert.That(s.GetValueOrDefault("ProtectSystem"), Is.EqualTo(new[] { "strict" }));
    }

    /// <summary>The [Service] section's settings, each with all its values in order.</summary>
    private static Dictionary<string, List<string>> ServiceSettings(string[] lines)
    {
        var settings = new Dictionary<string, List<string>>(StringComparer.Ordinal);
        bool service = false;
        foreach (string raw in lines)
        {
            string line = raw.Trim();
            if (line.StartsWith('['))
            {
                service = line == "[Service]";
                continue;
            }
            int eq = line.IndexOf('=', StringComparison.Ordinal);
            if (!service || line.Length == 0 || line.StartsWith('#') || eq < 0)
            {
                continue;
            }
            string key = line[..eq];
            if (!settings.TryGetValue(key, out List<string>? values))
            {
                settings[key] = values = [];
            }
            values.Add(line[(eq + 1)..]);
        }
        return settings;
    }

    private static string UnitPath() => XenPvUsb.Tests.Support.RepoFile.Find(Path.Combine("packaging", "systemd", "xenpvusbd.service"));

    private static string? FindOnPath(string name)
    {
        foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin").Split(':'))
        {
            string f = Path.Combine(dir, name);
            if (File.Exists(f))
            {
                return f;
            }
        }
        return null;
    }

    [GeneratedRegex(@"Overall exposure level for \S+: ([0-9]+(?:\.[0-9]+)?) (\w+)")]
    private static partial Regex ExposureLine();
}
