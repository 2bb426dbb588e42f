using System.Buffers.Binary;
using System.Diagnostics;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging;
using XenPvUsb.Backend;
using XenPvUsb.Logging;
using XenPvUsb.Simulation.Devices;
using XenPvUsb.Simulation.Guest;
using XenPvUsb.Simulation.Host;
using XenPvUsb.Toolstack;
using XenPvUsb.Xen;
using XenPvUsb.XenStore;

namespace XenPvUsb.Daemon;

/// <summary>
/// `make run`: the real backend on the simulated host, driven through the real CLI, with a guest
/// that enumerates an emulated stick and keyboard, reads the whole stick and checks it.
/// </summary>
internal static class Demo
{
    private const string GuestName = "demo-guest";

    public static async Task<int> RunAsync(DaemonOptions options)
    {
        string runDir = options.RunDirectory ?? Path.Combine(Path.GetTempPath(), $"xenpvusb-demo-{Environment.ProcessId}");
        string cli = options.Cli ?? Environment.GetEnvironmentVariable("XENPVUSB_CLI") ?? Path.Combine(AppContext.BaseDirectory, "xenpvusb");
        if (!File.Exists(cli))
        {
            Console.Error.WriteLine($"xenpvusbd --demo: the CLI is not at {cli}; pass --cli PATH");
            return 1;
        }
        using ILoggerFactory logging = LoggerFactory.Create(b => b.AddSimpleConsole(o => o.SingleLine = true).SetMinimumLevel(options.Verbose ? LogLevel.Debug : LogLevel.Warning));
        try
        {
            return await RunCoreAsync(runDir, cli, options, logging).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or TimeoutException or FrontendProtocolException or XenStoreException or InvalidOperationException)
        {
            Console.Error.WriteLine($"demo FAILED: {e.Message}");
            return 1;
        }
        finally
        {
            try
            {
                Directory.Delete(runDir, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }

    private static async Task<int> RunCoreAsync(string runDir, string cli, DaemonOptions options, ILoggerFactory logging)
    {
        Step("Starting a simulated Xen host (xenstored, grant tables, event channels, emulated USB)");
        await using SimulatedXenHost sim = await SimulatedXenHost.StartAsync(runDir, logging).ConfigureAwait(false);
        (string image, _, HidKeyboardDevice keyboard, UsbAudioDevice audio) = Devices.PlugDemoDevices(sim, Path.Combine(runDir, "stick.img"), options.Image);
        string expected = await Sha256Async(image).ConfigureAwait(false);
        Say($"emulated stick at {Devices.StickBusId} backed by {image} ({new FileInfo(image).Length / (1024 * 1024)} MiB, sha256 {expected[..16]}...)");
        Say($"emulated keyboard at {Devices.KeyboardBusId}, a hub at {Devices.HubBusId}, a USB 3 (SuperSpeed) stick at {Devices.SuperSpeedStickBusId}, a USB audio device at {Devices.AudioBusId}");

        Step("Starting the backend (the daemon's BackendRegistry, as xenpvusbd runs it)");
        using var loop = new EventLoop(logging.CreateLogger("XenPvUsb"));
        await using XenStoreConnection dom0 = await XenStoreConnection.ConnectAsync(sim.Dom0SocketPath).ConfigureAwait(false);
        BackendHost backendHost = sim.CreateBackendHost(dom0, loop, logging);
        backendHost.SysfsRoot = sim.SysfsRoot;
        backendHost.Audit = new DemoAudit();
        await using var registry = new BackendRegistry(backendHost);
        await registry.StartAsync().ConfigureAwait(false);

        Step($"Creating guest '{GuestName}' (what xl create does to xenstore)");
        SimulatedGuest guest = await sim.CreateGuestAsync(GuestName).ConfigureAwait(false);
        Say($"{GuestName} is domain {guest.Id}");

        Step("The toolstack (xenpvusb CLI) at work");
        var env = new Dictionary<string, string> { ["XENSTORED_PATH"] = sim.Dom0SocketPath, ["XENPVUSB_SYSFS"] = sim.SysfsRoot };
        await CliAsync(cli, env, "usb-list-assignable-devices").ConfigureAwait(false);
        Task<SimulatedFrontend> frontendTask = guest.ConnectFrontendAsync(0);
        await CliAsync(cli, env, "usb-hc-create", GuestName, "2", "8").ConfigureAwait(false);
        SimulatedFrontend fe = await frontendTask.ConfigureAwait(false);
        Say($"guest: xen-hcd-like frontend connected: USB {fe.UsbVersion}.0 controller, {fe.NumPorts} ports");
        await CliAsync(cli, env, "usb-attach", GuestName, "0", "1", Devices.StickBusId).ConfigureAwait(false);
        await CliAsync(cli, env, "usb-attach", GuestName, "0", "2", Devices.KeyboardBusId).ConfigureAwait(false);
        await CliAsync(cli, env, "usb-list", GuestName).ConfigureAwait(false);

        Step("The guest enumerates what appeared on its ports");
        await fe.WaitForPortAsync(1, connected: true, TimeSpan.FromSeconds(10)).ConfigureAwait(false);
        await fe.WaitForPortAsync(2, connected: true, TimeSpan.FromSeconds(10)).ConfigureAwait(false);
        GuestUsbDevice stickDev = await GuestUsbDevice.EnumerateAsync(fe, 1, address: 2).ConfigureAwait(false);
        GuestUsbDevice kbdDev = await GuestUsbDevice.EnumerateAsync(fe, 2, address: 3).ConfigureAwait(false);
        foreach (GuestUsbDevice d in new[] { stickDev, kbdDev })
        {
            Say($"guest: port {d.Port}: ID {d.VendorId:x4}:{d.ProductId:x4} {d.Manufacturer} {d.Product}, interface class {d.InterfaceClass:x2}/{d.InterfaceSubClass:x2}/{d.InterfaceProtocol:x2}, {d.SpeedName} speed, address {d.Address}");
        }

        Step("The guest types on the keyboard (interrupt IN)");
        string typed = await ReadKeyboardAsync(kbdDev, keyboard, "hello xen").ConfigureAwait(false);
        Say($"guest: read \"{typed}\" from the keyboard");

        Step("The guest reads the whole stick (bulk-only transport, SCSI READ(10))");
        var storage = new GuestMassStorage(stickDev);
        Say($"guest: SCSI INQUIRY: {await storage.InquiryAsync().ConfigureAwait(false)}");
        await storage.TestUnitReadyAsync().ConfigureAwait(false);
        await storage.ReadCapacityAsync().ConfigureAwait(false);
        long bytes = storage.BlockCount * storage.BlockSize;
        Say($"guest: capacity {storage.BlockCount} blocks of {storage.BlockSize} bytes ({bytes / (1024 * 1024)} MiB)");
        (string actual, double seconds) = await ReadAllAsync(storage).ConfigureAwait(false);
        Say($"guest: read {bytes / (1024 * 1024)} MiB in {seconds:0.00} s: {bytes / seconds / 1e6:0.0} MB/s");
        Say($"guest: sha256 {actual}");
        Say($"host:  sha256 {expected}");
        if (actual != expected)
        {
            Console.Error.WriteLine("demo FAILED: the guest read different data than the image holds");
            return 1;
        }
        Say("checksums match");

        Step("A USB 3 stick: usbif has no SuperSpeed, so the guest sees it at high speed, with high-speed descriptors");
        await CliAsync(cli, env, "usb-attach", GuestName, "0", "3", Devices.SuperSpeedStickBusId).ConfigureAwait(false);
        await fe.WaitForPortAsync(3, connected: true, TimeSpan.FromSeconds(10)).ConfigureAwait(false);
        GuestUsbDevice ssDev = await GuestUsbDevice.EnumerateAsync(fe, 3, address: 4).ConfigureAwait(false);
        Say($"guest: port 3: ID {ssDev.VendorId:x4}:{ssDev.ProductId:x4} {ssDev.Product}, {ssDev.SpeedName} speed, bcdUSB {ssDev.BcdUsb:x4}, ep0 {ssDev.MaxPacketSize0} bytes, bulk {string.Join("/", ssDev.Endpoints.Select(e => e.MaxPacketSize))} bytes; descriptor warnings: {(ssDev.DescriptorWarnings.Count == 0 ? "none" : string.Join("; ", ssDev.DescriptorWarnings))}");
        var ssStorage = new GuestMassStorage(ssDev);
        await ssStorage.ReadCapacityAsync().ConfigureAwait(false);
        (string ssActual, double ssSeconds) = await ReadAllAsync(ssStorage).ConfigureAwait(false);
        string ssExpected = await Sha256Async(Devices.SuperSpeedImagePath(Path.Combine(runDir, "stick.img"))).ConfigureAwait(false);
        Say($"guest: read the USB 3 stick whole ({ssStorage.BlockCount * ssStorage.BlockSize / (1024 * 1024)} MiB in {ssSeconds:0.00} s), sha256 {(ssActual == ssExpected ? "matches" : "DIFFERS")}");
        if (ssActual != ssExpected || ssDev.DescriptorWarnings.Count != 0)
        {
            Console.Error.WriteLine("demo FAILED: the USB 3 stick was not served as a clean high-speed device");
            return 1;
        }

        Step("A USB audio device: the guest plays a tone and records from the microphone (isochronous OUT and IN)");
        await CliAsync(cli, env, "usb-attach", GuestName, "0", "4", Devices.AudioBusId).ConfigureAwait(false);
        await fe.WaitForPortAsync(4, connected: true, TimeSpan.FromSeconds(10)).ConfigureAwait(false);
        GuestUsbDevice audioDev = await GuestUsbDevice.EnumerateAsync(fe, 4, address: 5).ConfigureAwait(false);
        Say($"guest: port 4: ID {audioDev.VendorId:x4}:{audioDev.ProductId:x4} {audioDev.Product}, {audioDev.SpeedName} speed");
        string? audioFailure = await AudioAsync(audioDev, audio).ConfigureAwait(false);
        if (audioFailure is not null)
        {
            Console.Error.WriteLine($"demo FAILED: {audioFailure}");
            return 1;
        }

        Step("Detaching the stick and removing the controller");
        await CliAsync(cli, env, "usb-detach", GuestName, "0", "1").ConfigureAwait(false);
        await fe.WaitForPortAsync(1, connected: false, TimeSpan.FromSeconds(10)).ConfigureAwait(false);
        Say("guest: port 1 reported disconnected");
        await CliAsync(cli, env, "usb-hc-destroy", GuestName, "0").ConfigureAwait(false);
        await sim.DestroyGuestAsync(guest).ConfigureAwait(false);

        if (!await PersistentAsync(sim, backendHost, cli, env, runDir).ConfigureAwait(false))
        {
            return 1;
        }
        Step("Done: the guest used both devices through xenpvusbd's backend");
        return 0;
    }

    /// <summary>
    /// A persistent assignment made while the guest is down: the daemon gives it the stick (and a controller) when
    /// it is created, and again after it reboots with a new domain id, with no command in between.
    /// </summary>
    private static async Task<bool> PersistentAsync(SimulatedXenHost sim, BackendHost host, string cli, Dictionary<string, string> env, string runDir)
    {
        Step($"A persistent assignment: the stick is {GuestName}'s, by vendor:product and serial, across reboots");
        string conf = Path.Combine(runDir, "etc", "assignments.conf");
        Directory.CreateDirectory(Path.GetDirectoryName(conf)!);
        File.Delete(conf);
        env["XENPVUSB_ASSIGNMENTS"] = conf;
        await CliAsync(cli, env, "assign", GuestName, $"id={MassStorageDevice.DefaultVendorId:x4}:{MassStorageDevice.DefaultProductId:x4}", "serial=XPU0001", "controller=2:4").ConfigureAwait(false);
        await CliAsync(cli, env, "assignments").ConfigureAwait(false);
        await using var service = new AssignmentService(host, new AssignmentSources
        {
            AssignmentsPath = conf,
            PolicyPath = Path.Combine(runDir, "etc", "usb-policy.conf"),
            SysfsRoot = sim.SysfsRoot,
        });
        await service.StartAsync().ConfigureAwait(false);
        DomId? previous = null;
        foreach (string when in new[] { "created", "rebooted" })
        {
            SimulatedGuest g = await sim.CreateGuestAsync(GuestName).ConfigureAwait(false);
            Say($"{GuestName} {when}: domain {g.Id}{(previous is { } p ? $" (was {p})" : "")}; no xenpvusb command follows");
            SimulatedFrontend fe = await g.ConnectFrontendAsync(0).ConfigureAwait(false);
            await fe.WaitForPortAsync(1, connected: true, TimeSpan.FromSeconds(15)).ConfigureAwait(false);
            GuestUsbDevice dev = await GuestUsbDevice.EnumerateAsync(fe, 1, address: 2).ConfigureAwait(false);
            Say($"guest: controller 0 (made by xenpvusbd), port 1: ID {dev.VendorId:x4}:{dev.ProductId:x4} {dev.Product}, serial {dev.Serial}");
            if (dev.ProductId != MassStorageDevice.DefaultProductId)
            {
                Console.Error.WriteLine("demo FAILED: the assigned stick did not come back");
                return false;
            }
            await CliAsync(cli, env, "usb-list", GuestName).ConfigureAwait(false);
            previous = g.Id;
            await sim.DestroyGuestAsync(g).ConfigureAwait(false);
        }
        await CliAsync(cli, env, "unassign", GuestName).ConfigureAwait(false);
        return true;
    }

    /// <summary>The audit trail as xenpvusbd sends it to the journal, printed.</summary>
    private sealed class DemoAudit : IAuditTrail
    {
        public void Record(AuditRecord record) =>
            Console.WriteLine($"    journal: MESSAGE_ID={AuditTrail.MessageId(record.Action)} XENPVUSB_ACTION={record.Action.ToString().ToLowerInvariant()} BUSID={record.BusId} DOMAIN={record.Domain}{(record.Rule is { } r ? $" RULE=\"{r}\"" : "")}");
    }

    private static async Task<string> ReadKeyboardAsync(GuestUsbDevice kbd, HidKeyboardDevice keyboard, string text)
    {
        byte ep = kbd.FindEndpoint(Usb.UsbTransferType.Interrupt, true)?.Address ?? throw new IOException("keyboard has no interrupt IN endpoint");
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        var result = new System.Text.StringBuilder();
        byte[] report = new byte[8];
        Say($"host: typing \"{text}\" on the emulated keyboard");
        keyboard.Type(text);
        while (result.Length < text.Length)
        {
            UrbResult r = await kbd.InterruptAsync(ep, report, cts.Token).ConfigureAwait(false);
            if (!r.Ok)
            {
                throw new IOException($"interrupt IN failed with status {r.Status}");
            }
            byte key = report[2];
            if (key is >= 0x04 and <= 0x1d)
            {
                result.Append((char)('a' + key - 0x04));
            }
            else if (key == 0x2c)
            {
                result.Append(' ');
            }
        }
        return result.ToString();
    }

    /// <summary>
    /// Plays half a second of a stereo test pattern (left: a running sample counter, right: its complement) in
    /// URBs of 8 packets and checks the device received every
    /// sample in order; then records a quarter of a second and checks the microphone's counter channel runs on
    /// without a gap. Returns null, or what went wrong.
    /// </summary>
    private static async Task<string?> AudioAsync(GuestUsbDevice dev, UsbAudioDevice audio)
    {
        const int packets = 8;
        const int urbs = 63; // 504 ms
        int packet = UsbAudioDevice.SpeakerPacketSize;
        if (!(await dev.SetInterfaceAsync(UsbAudioDevice.SpeakerInterface, 1).ConfigureAwait(false)).Ok)
        {
            return "the speaker did not start streaming";
        }
        byte[] played = new byte[urbs * packets * packet];
        for (int n = 0; n < played.Length / 4; n++)
        {
            BinaryPrimitives.WriteInt16LittleEndian(played.AsSpan(4 * n), unchecked((short)n));
            BinaryPrimitives.WriteInt16LittleEndian(played.AsSpan((4 * n) + 2), unchecked((short)~n));
        }
        var sw = Stopwatch.StartNew();
        int errors = await StreamAsync(dev, UsbAudioDevice.SpeakerEndpoint, played, packet, packets).ConfigureAwait(false);
        await dev.SetInterfaceAsync(UsbAudioDevice.SpeakerInterface, 0).ConfigureAwait(false);
        bool exact = audio.SpeakerData().AsSpan().SequenceEqual(played);
        Say($"guest: played {urbs * packets} packets ({played.Length} bytes, {sw.Elapsed.TotalMilliseconds:0} ms); packet errors {errors}");
        Say($"host:  the speaker received {audio.SpeakerPackets} packets, samples {(exact ? "exactly as played" : "DIFFERENT from what was played")}");
        if (!exact || errors != 0 || audio.SpeakerPackets != urbs * packets)
        {
            return "the audio device did not receive what the guest played";
        }

        if (!(await dev.SetInterfaceAsync(UsbAudioDevice.MicrophoneInterface, 1).ConfigureAwait(false)).Ok)
        {
            return "the microphone did not start streaming";
        }
        int mic = audio.MicrophonePacketSize;
        const int recordUrbs = 32; // 256 ms
        byte[] recorded = new byte[recordUrbs * packets * mic];
        errors = await StreamAsync(dev, UsbAudioDevice.MicrophoneEndpoint, recorded, mic, packets).ConfigureAwait(false);
        await dev.SetInterfaceAsync(UsbAudioDevice.MicrophoneInterface, 0).ConfigureAwait(false);
        int frameBytes = audio.MicrophoneChannels * UsbAudioDevice.BytesPerSample;
        long gaps = 0;
        for (int n = 1; n < recorded.Length / frameBytes; n++)
        {
            short previous = BinaryPrimitives.ReadInt16LittleEndian(recorded.AsSpan((n - 1) * frameBytes));
            short current = BinaryPrimitives.ReadInt16LittleEndian(recorded.AsSpan(n * frameBytes));
            gaps += current == unchecked((short)(previous + 1)) ? 0 : 1;
        }
        Say($"guest: recorded {recordUrbs * packets} packets ({recorded.Length / frameBytes} sample frames); packet errors {errors}, breaks in the microphone's counter {gaps}");
        return errors == 0 && gaps == 0 ? null : "the guest's recording has errors or gaps";
    }

    /// <summary>
    /// Streams <paramref name="buffer"/> through an isochronous endpoint in URBs of <paramref name="packets"/> packets
    /// of <paramref name="packet"/> bytes, three in flight as snd-usb-audio keeps them. Returns the packets that failed.
    /// </summary>
    private static async Task<int> StreamAsync(GuestUsbDevice dev, byte endpoint, byte[] buffer, int packet, int packets)
    {
        int[] lengths = Enumerable.Repeat(packet, packets).ToArray();
        int urbs = buffer.Length / (packet * packets);
        var inFlight = new Queue<Task<IsoUrbResult>>();
        int errors = 0;
        for (int u = 0; u < urbs || inFlight.Count > 0;)
        {
            while (u < urbs && inFlight.Count < 3)
            {
                inFlight.Enqueue(dev.IsochronousAsync(endpoint, buffer.AsMemory(u * packets * packet, packets * packet), lengths));
                u++;
            }
            IsoUrbResult r = await inFlight.Dequeue().ConfigureAwait(false);
            errors += r.Ok ? r.ErrorCount : packets;
        }
        return errors;
    }

    private static async Task<(string Sha, double Seconds)> ReadAllAsync(GuestMassStorage storage)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        byte[] buffer = new byte[GuestMassStorage.BlocksPerCommand * storage.BlockSize];
        var sw = Stopwatch.StartNew();
        for (long lba = 0; lba < storage.BlockCount; lba += GuestMassStorage.BlocksPerCommand)
        {
            int blocks = (int)Math.Min(GuestMassStorage.BlocksPerCommand, storage.BlockCount - lba);
            Memory<byte> chunk = buffer.AsMemory(0, blocks * storage.BlockSize);
            await storage.ReadAsync((uint)lba, chunk).ConfigureAwait(false);
            sha.AppendData(chunk.Span);
        }
        double seconds = sw.Elapsed.TotalSeconds;
        return (Convert.ToHexStringLower(sha.GetHashAndReset()), seconds);
    }

    private static async Task<string> Sha256Async(string path)
    {
        await using FileStream f = File.OpenRead(path);
        return Convert.ToHexStringLower(await SHA256.HashDataAsync(f).ConfigureAwait(false));
    }

    private static async Task CliAsync(string cli, Dictionary<string, string> env, params string[] args)
    {
        Console.WriteLine($"  $ xenpvusb {string.Join(' ', args)}");
        var psi = new ProcessStartInfo(cli) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in args)
        {
            psi.ArgumentList.Add(a);
        }
        foreach (KeyValuePair<string, string> kv in env)
        {
            psi.Environment[kv.Key] = kv.Value;
        }
        using Process p = Process.Start(psi) ?? throw new IOException($"cannot start {cli}");
        string output = await p.StandardOutput.ReadToEndAsync().ConfigureAwait(false);
        string error = await p.StandardError.ReadToEndAsync().ConfigureAwait(false);
        await p.WaitForExitAsync().ConfigureAwait(false);
        foreach (string line in (output + error).Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            Console.WriteLine($"    {line}");
        }
        if (p.ExitCode != 0)
        {
            throw new IOException($"xenpvusb {args[0]} exited with {p.ExitCode}");
        }
    }

    private static void Step(string text) => Console.WriteLine($"==> {text}");

    private static void Say(string text) => Console.WriteLine($"    {text}");
}
