using global::XenPvUsb.Usbif;
using XenPvUsb.Backend;
using XenPvUsb.Simulation.Guest;
using XenPvUsb.Tests.Support;
using XenPvUsb.Usb;
using static global::XenPvUsb.Usbif.Usbif;

namespace XenPvUsb.Tests.Backend;

/// <summary>What only the grant-map data path does (the shared behaviour runs in both modes in EndToEndTests and HostileFrontendTests).</summary>
[TestFixture]
public sealed class GrantMapTests
{
    private SimWorld _world = null!;

    [SetUp]
    public async Task StartWorld()
    {
        _world = await SimWorld.StartAsync();
        _world.GrantMode = GrantMode.Map;
    }

    [TearDown]
    public async Task StopWorld() => await _world.DisposeAsync();

    private async Task<GuestHandle> GuestWithStickAsync()
    {
        GuestHandle g = await _world.AddGuestAsync("g1", 2, 2, _world.PlugStick(seed: 5));
        await GuestUsbDevice.EnumerateAsync(g.Frontend, 1, 2);
        return g;
    }

    private static usbif_urb_request BulkIn(ushort id, (uint Gref, ushort Offset, ushort Length)[] segs)
    {
        var req = new usbif_urb_request { id = id, pipe = UsbifPipe.Create(1, 2, 1, true, UsbTransferType.Bulk).Value };
        int total = 0;
        for (int i = 0; i < segs.Length; i++)
        {
            req.seg[i] = new usbif_request_segment { gref = segs[i].Gref, offset = segs[i].Offset, length = segs[i].Length };
            total += segs[i].Length;
        }
        req.nr_buffer_segs = (byte)segs.Length;
        req.buffer_length = (ushort)total;
        return req;
    }

    [Test]
    public async Task BulkInIntoReadOnlyGrant_IsRefusedAtSubmit()
    {
        // Copy mode only finds out when it copies the data back; a writable map fails at once.
        GuestHandle g = await GuestWithStickAsync();
        (_, global::XenPvUsb.Xen.GrantRef gref) = g.Frontend.GrantPage(readOnly: true);
        usbif_urb_response r = await g.Frontend.SubmitRawAsync(BulkIn(300, [(gref.Value, 0, 512)])).WaitAsync(TimeSpan.FromSeconds(5));
        Assert.That(r.status, Is.EqualTo(USBIF_STATUS_INVAL));
        VusbController c = _world.Registry.Find(g.Id, g.DevId)!.Controller!;
        Assert.That(await _world.Loop.InvokeAsync(() => c.InFlight), Is.Zero);
        Assert.That(g.Guest.Grants.MappedGrants, Is.EqualTo(2), "only the ring pages are mapped");
    }

    [Test]
    public async Task PagesThatAreNotOneBuffer_AreGrantCopied()
    {
        // Two segments that both start at offset 0 cannot be one range of mapped pages: copy instead.
        GuestHandle g = await GuestWithStickAsync();
        (_, global::XenPvUsb.Xen.GrantRef a) = g.Frontend.GrantPage(readOnly: false);
        (_, global::XenPvUsb.Xen.GrantRef b) = g.Frontend.GrantPage(readOnly: false);
        Task<usbif_urb_response> pending = g.Frontend.SubmitRawAsync(BulkIn(301, [(a.Value, 0, 512), (b.Value, 0, 512)]));
        VusbController c = _world.Registry.Find(g.Id, g.DevId)!.Controller!;
        await _world.DrainLoopAsync();
        Assert.That(await _world.Loop.InvokeAsync(() => c.InFlight), Is.EqualTo(1), "submitted to the stick");
        Assert.That(g.Guest.Grants.MappedGrants, Is.EqualTo(2), "nothing mapped for it");
        await _world.Loop.InvokeAsync(() => c.DetachDevice(1)?.Dispose());
        Assert.That((await pending.WaitAsync(TimeSpan.FromSeconds(5))).status, Is.Not.EqualTo(USBIF_STATUS_OK));
    }

    [Test]
    public async Task InFlightMappedUrb_KeepsItsPagesMapped_UntilItCompletes()
    {
        GuestHandle g = await GuestWithStickAsync();
        (_, global::XenPvUsb.Xen.GrantRef a) = g.Frontend.GrantPage(readOnly: false);
        (_, global::XenPvUsb.Xen.GrantRef b) = g.Frontend.GrantPage(readOnly: false);
        // An IN with no command before it: the stick holds it until it is cancelled.
        Task<usbif_urb_response> pending = g.Frontend.SubmitRawAsync(BulkIn(302, [(a.Value, 3584, 512), (b.Value, 0, 4096)]));
        await _world.DrainLoopAsync();
        Assert.That(g.Guest.Grants.MappedGrants, Is.EqualTo(4), "rings plus the URB's two pages");
        Assert.That(g.Guest.Grants.TryEndAccess(a), Is.False, "the guest cannot take a page back while it is mapped");

        VusbController c = _world.Registry.Find(g.Id, g.DevId)!.Controller!;
        await _world.Loop.InvokeAsync(() => c.DetachDevice(1)?.Dispose());
        Assert.That((await pending.WaitAsync(TimeSpan.FromSeconds(5))).status, Is.Not.EqualTo(USBIF_STATUS_OK));
        Assert.That(g.Guest.Grants.MappedGrants, Is.EqualTo(2));
        Assert.That(g.Guest.Grants.TryEndAccess(a), Is.True);
    }
}
