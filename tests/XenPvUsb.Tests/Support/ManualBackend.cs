using System.Globalization;
using XenPvUsb.Rings;
using XenPvUsb.Simulation.Guest;
using XenPvUsb.Simulation.Host;
using XenPvUsb.Toolstack;
using XenPvUsb.Usbif;
using XenPvUsb.Xen;
using XenPvUsb.XenStore;

namespace XenPvUsb.Tests.Support;

/// <summary>
/// The backend's half of the urb ring done by hand, with none of the real backend's code above the ring
/// arithmetic: a test takes each request the reference frontend puts on the ring, looks at its segments
/// through dom0's view of the grant table, writes what it likes into them and answers. For checking the
/// frontend's own wire format; conn-ring events are never sent.
/// </summary>
internal sealed class ManualBackend : IAsyncDisposable
{
    private readonly SimulatedXenHost _host;
    private readonly IGrantTable _grants;
    private readonly GrantMapping _ringMapping;
    private readonly IEventChannel _channel;
    private BackRing<usbif_urb_request, usbif_urb_response> _ring;

    private ManualBackend(SimulatedXenHost host, SimulatedGuest guest, SimulatedFrontend frontend, IGrantTable grants, GrantMapping ring, IEventChannel channel)
    {
        _host = host;
        Guest = guest;
        Frontend = frontend;
        _grants = grants;
        _ringMapping = ring;
        _channel = channel;
        _ring = new BackRing<usbif_urb_request, usbif_urb_response>(ring.Address);
    }

    public SimulatedGuest Guest { get; }

    public SimulatedFrontend Frontend { get; }

    /// <summary>A simulated host with one guest whose frontend is connected to this backend (one port, usb-ver 2).</summary>
    public static async Task<ManualBackend> StartAsync(string directory)
    {
        SimulatedXenHost host = await SimulatedXenHost.StartAsync(directory);
        XenStoreConnection dom0 = await XenStoreConnection.ConnectAsync(host.Dom0SocketPath);
        SimulatedGuest guest = await host.CreateGuestAsync("manual");
        Task<SimulatedFrontend> connecting = guest.ConnectFrontendAsync(0);
        int devId = await new VusbToolstack(dom0, host.SysfsRoot).CreateControllerAsync(guest.Id, 2, 1, waitForBackend: false);
        string backend = $"/local/domain/0/backend/vusb/{guest.Id.Value}/{devId}";
        await dom0.WriteAsync($"{backend}/state", ((int)XenbusState.InitWait).ToString(CultureInfo.InvariantCulture));
        SimulatedFrontend frontend = await connecting;
        string front = frontend.FrontendPath;
        uint urbRef = uint.Parse((await dom0.ReadAsync($"{front}/urb-ring-ref"))!, CultureInfo.InvariantCulture);
        uint port = uint.Parse((await dom0.ReadAsync($"{front}/event-channel"))!, CultureInfo.InvariantCulture);
        IGrantTable grants = host.Grants.OpenAs(DomId.Dom0);
        GrantMapping ring = grants.Map(guest.Id, new GrantRef(urbRef), writable: true);
        IEventChannel channel = host.EventChannels.OpenAs(DomId.Dom0).BindInterdomain(guest.Id, new EvtchnPort(port));
        await dom0.WriteAsync($"{backend}/state", ((int)XenbusState.Connected).ToString(CultureInfo.InvariantCulture));
        await dom0.DisposeAsync();
        return new ManualBackend(host, guest, frontend, grants, ring, channel);
    }

    /// <summary>The next request the frontend pushed, copied out of the ring.</summary>
    public async Task<usbif_urb_request> NextRequestAsync(int timeoutMs = 10000)
    {
        long deadline = Environment.TickCount64 + timeoutMs;
        while (!_ring.HasUnconsumedRequests())
        {
            if (Environment.TickCount64 > deadline)
            {
                throw new TimeoutException("no request from the frontend");
            }
            await Task.Delay(1);
        }
        Assert.That(_ring.TryReadRequestProd(out _), Is.True);
        Assert.That(_ring.TryCopyNextRequest(out usbif_urb_request request), Is.True);
        return request;
    }

    /// <summary>Maps one segment's page (throws <see cref="GrantException"/> as Xen would, e.g. a read-only grant mapped writable).</summary>
    public GrantMapping Map(usbif_request_segment segment, bool writable) => _grants.Map(Guest.Id, new GrantRef(segment.gref), writable);

    /// <summary>The bytes of segments [first, first + count) one after the other, each its offset and length in its page.</summary>
    public unsafe byte[] Read(in usbif_urb_request request, int first, int count)
    {
        var bytes = new List<byte>();
        for (int i = first; i < first + count; i++)
        {
            usbif_request_segment seg = request.seg[i];
            using GrantMapping m = Map(seg, writable: false);
            bytes.AddRange(new ReadOnlySpan<byte>((byte*)m.Address + seg.offset, seg.length).ToArray());
        }
        return [.. bytes];
    }

    /// <summary>Writes <paramref name="data"/> across segments [first, ...) from their offsets on, as far as it goes.</summary>
    public unsafe void Write(in usbif_urb_request request, int first, ReadOnlySpan<byte> data)
    {
        int done = 0;
        for (int i = first; done < data.Length; i++)
        {
            usbif_request_segment seg = request.seg[i];
            int len = Math.Min(seg.length, data.Length - done);
            using GrantMapping m = Map(seg, writable: true);
            data.Slice(done, len).CopyTo(new Span<byte>((byte*)m.Address + seg.offset, len));
            done += len;
        }
    }

    public void Respond(usbif_urb_response response)
    {
        _ring.PutResponse(response);
        if (_ring.PushResponsesAndCheckNotify())
        {
            _channel.Notify();
        }
    }

    public async ValueTask DisposeAsync()
    {
        _channel.Dispose();
        _ringMapping.Dispose();
        await Frontend.DisposeAsync();
        await _host.DisposeAsync();
    }
}
