using global::XenPvUsb.Usbif;
using XenPvUsb.Backend;
using XenPvUsb.Simulation.Devices;
using XenPvUsb.Simulation.Guest;
using XenPvUsb.Tests.Support;
using XenPvUsb.Usb;
using static global::XenPvUsb.Usbif.Usbif;

namespace XenPvUsb.Tests.Backend;

/// <summary>
/// Every malformed request kind gets the error status the protocol gives it, while a second guest on
/// the same daemon keeps reading its stick.
/// </summary>
[TestFixture(GrantMode.Copy)]
[TestFixture(GrantMode.Map)]
public sealed class HostileFrontendTests
{
    private readonly GrantMode _grantMode;

    private const ushort RawId = 200;

    private SimWorld _world = null!;

    public HostileFrontendTests(GrantMode grantMode)
    {
        _grantMode = grantMode;
    }
    private GuestHandle _hostile = null!;
    private GuestHandle _bystander = null!;
    private GuestMassStorage _bystanderStorage = null!;

    [SetUp]
    public async Task StartWorld()
    {
        _world = await SimWorld.StartAsync();
        _world.GrantMode = _grantMode;
        string hostileStick = _world.PlugStick(seed: 11);
        string bystanderStick = _world.PlugStick(seed: 12);
        _hostile = await _world.AddGuestAsync("hostile", 8, 2, hostileStick);
        _bystander = await _world.AddGuestAsync("bystander", 8, 2, bystanderStick);
        await GuestUsbDevice.EnumerateAsync(_hostile.Frontend, 1, 2);
        _bystanderStorage = new GuestMassStorage(await GuestUsbDevice.EnumerateAsync(_bystander.Frontend, 1, 2));
        await _bystanderStorage.ReadCapacityAsync();
    }

    [TearDown]
    public async Task StopWorld()
    {
        // The other guest was never disturbed.
        byte[] buf = new byte[64 * 512];
        await _bystanderStorage.ReadAsync(0, buf);
        Assert.That(_bystander.Frontend.ProtocolError, Is.Null);
        await _world.DisposeAsync();
    }

    private static usbif_urb_request GetDescriptor(int port, int device, ushort length)
    {
        return new usbif_urb_request
        {
            id = RawId,
            pipe = UsbifPipe.Create(port, device, 0, true, UsbTransferType.Control).Value,
            u_ctrl = GuestUsbDevice.Setup(0x80, 6, 0x0100, 0, length),
        };
    }

    private usbif_urb_request WithSegment(usbif_urb_request req, ushort offset, ushort length, bool readOnly)
    {
        (_, global::XenPvUsb.Xen.GrantRef gref) = _hostile.Frontend.GrantPage(readOnly);
        req.nr_buffer_segs = 1;
        req.buffer_length = length;
        req.seg[0] = new usbif_request_segment { gref = gref.Value, offset = offset, length = length };
        return req;
    }

    private async Task<int> SubmitAsync(usbif_urb_request req) =>
        (await _hostile.Frontend.SubmitRawAsync(req).WaitAsync(TimeSpan.FromSeconds(5))).status;

    [Test]
    public async Task WellFormedRawRequest_Succeeds()
    {
        Assert.That(await SubmitAsync(WithSegment(GetDescriptor(1, 2, 18), 0, 18, readOnly: false)), Is.EqualTo(USBIF_STATUS_OK));
    }

    [Test]
    public async Task PortZero_IsInvalid() =>
        Assert.That(await SubmitAsync(WithSegment(GetDescriptor(0, 2, 18), 0, 18, false)), Is.EqualTo(USBIF_STATUS_INVAL));

    [Test]
    public async Task PortBeyondNumPorts_IsInvalid() =>
        Assert.That(await SubmitAsync(WithSegment(GetDescriptor(9, 2, 18), 0, 18, false)), Is.EqualTo(USBIF_STATUS_INVAL));

    [Test]
    public async Task PortWithNoDevice_IsNoDev() =>
        Assert.That(await SubmitAsync(WithSegment(GetDescriptor(3, 2, 18), 0, 18, false)), Is.EqualTo(USBIF_STATUS_NODEV));

    [Test]
    public async Task UnknownDeviceAddress_IsNoDev() =>
        Assert.That(await SubmitAsync(WithSegment(GetDescriptor(1, 77, 18), 0, 18, false)), Is.EqualTo(USBIF_STATUS_NODEV));

    [Test]
    public async Task MoreThan16Segments_IsInvalid()
    {
        usbif_urb_request req = WithSegment(GetDescriptor(1, 2, 18), 0, 18, false);
        req.nr_buffer_segs = 17;
        Assert.That(await SubmitAsync(req), Is.EqualTo(USBIF_STATUS_INVAL));
    }

    [Test]
    public async Task SegmentPastThePage_IsInvalid() =>
        Assert.That(await SubmitAsync(WithSegment(GetDescriptor(1, 2, 18), 4090, 18, false)), Is.EqualTo(USBIF_STATUS_INVAL));

    [Test]
    public async Task BufferLengthNotTheSegmentsSum_IsInvalid()
    {
        usbif_urb_request req = WithSegment(GetDescriptor(1, 2, 18), 0, 18, false);
        req.buffer_length = 64;
        Assert.That(await SubmitAsync(req), Is.EqualTo(USBIF_STATUS_INVAL));
    }

    [Test]
    public async Task ControlWLengthBeyondTheBuffer_IsInvalid()
    {
        usbif_urb_request req = WithSegment(GetDescriptor(1, 2, 4096), 0, 18, false);
        Assert.That(await SubmitAsync(req), Is.EqualTo(USBIF_STATUS_INVAL));
    }

    [Test]
    public async Task ZeroLengthSegment_IsInvalid()
    {
        usbif_urb_request req = WithSegment(GetDescriptor(1, 2, 0), 0, 0, false);
        Assert.That(await SubmitAsync(req), Is.EqualTo(USBIF_STATUS_INVAL));
    }

    [Test]
    public async Task UngrantedRef_ForOutData_IsInvalid()
    {
        var req = new usbif_urb_request
        {
            id = RawId,
            pipe = UsbifPipe.Create(1, 2, 2, false, UsbTransferType.Bulk).Value,
            nr_buffer_segs = 1,
            buffer_length = 31,
        };
        req.seg[0] = new usbif_request_segment { gref = 999_999, offset = 0, length = 31 };
        Assert.That(await SubmitAsync(req), Is.EqualTo(USBIF_STATUS_INVAL));
    }

    [Test]
    public async Task InDataIntoReadOnlyGrant_IsInvalid() =>
        Assert.That(await SubmitAsync(WithSegment(GetDescriptor(1, 2, 18), 0, 18, readOnly: true)), Is.EqualTo(USBIF_STATUS_INVAL));

    [Test]
    public async Task IdAlreadyInFlight_IsInvalid()
    {
        var kbd = new HidKeyboardDevice();
        string busId = _world.Plug(kbd);
        await _world.Toolstack.AttachAsync(_hostile.Id, _hostile.DevId, 2, busId);
        await _hostile.Frontend.WaitForPortAsync(2, true, TimeSpan.FromSeconds(5));
        GuestUsbDevice k = await GuestUsbDevice.EnumerateAsync(_hostile.Frontend, 2, 3);
        Task<UrbResult> pending = k.InterruptAsync(0x81, new byte[8]);
        await Task.Delay(20);
        ushort busy = _hostile.Frontend.InFlightRequestIds().Single();

        usbif_urb_request dup = WithSegment(GetDescriptor(1, 2, 18), 0, 18, false);
        dup.id = busy;
        Assert.That(await SubmitAsync(dup), Is.EqualTo(USBIF_STATUS_INVAL));

        kbd.Type("x");
        Assert.That((await pending.WaitAsync(TimeSpan.FromSeconds(5))).Status, Is.EqualTo(USBIF_STATUS_OK), "the original is untouched");
    }

    [Test]
    public async Task UnlinkOfUnknownId_IsNoDev()
    {
        var req = new usbif_urb_request
        {
            id = RawId,
            pipe = UsbifPipe.Create(1, 2, 1, true, UsbTransferType.Bulk, unlink: true).Value,
            u_unlink_unlink_id = 4242,
        };
        Assert.That(await SubmitAsync(req), Is.EqualTo(USBIF_STATUS_NODEV));
    }

    [TestCase((ushort)0)]
    [TestCase((ushort)128)]
    public async Task SetAddressOutOfRange_IsInvalid(ushort address)
    {
        var req = new usbif_urb_request
        {
            id = RawId,
            pipe = UsbifPipe.Create(1, 0, 0, false, UsbTransferType.Control).Value,
            u_ctrl = GuestUsbDevice.Setup(0x00, 5, address, 0, 0),
        };
        Assert.That(await SubmitAsync(req), Is.EqualTo(USBIF_STATUS_INVAL));
    }

    [Test]
    public async Task IsochronousWithoutDescriptorSegments_IsRefused()
    {
        var req = new usbif_urb_request
        {
            id = RawId,
            pipe = UsbifPipe.Create(1, 2, 1, true, UsbTransferType.Isochronous).Value,
            u_isoc_number_of_packets = 1,
        };
        Assert.That(await SubmitAsync(req), Is.EqualTo(USBIF_STATUS_INVAL));
    }

    [Test]
    public async Task ProducerIndexPastTheRing_StopsOnlyThatController()
    {
        _hostile.Frontend.CorruptRequestProducer(1000);
        string state = $"/local/domain/0/backend/vusb/{_hostile.Id.Value}/{_hostile.DevId}/state";
        await _world.WaitForStateAsync(state, "5");
        VusbController c = _world.Registry.Find(_hostile.Id, _hostile.DevId)!.Controller!;
        Assert.That(await _world.Loop.InvokeAsync(() => c.IsConnected), Is.False);
        Assert.That(_world.Registry.Count, Is.EqualTo(2), "the daemon still serves both controllers' xenstore nodes");
    }

    private async Task AssertControllerStoppedAsync()
    {
        string state = $"/local/domain/0/backend/vusb/{_hostile.Id.Value}/{_hostile.DevId}/state";
        await _world.WaitForStateAsync(state, "5");
        VusbController c = _world.Registry.Find(_hostile.Id, _hostile.DevId)!.Controller!;
        Assert.That(await _world.Loop.InvokeAsync(() => c.IsConnected), Is.False);
        Assert.That(_world.Registry.Count, Is.EqualTo(2), "the daemon still serves both controllers' xenstore nodes");
        Assert.That(_world.Loop.Completion.IsCompleted, Is.False, "the event loop goes on");
    }

    private async Task<Task<UrbResult>> KeyboardReadInFlightAsync()
    {
        var kbd = new HidKeyboardDevice();
        string busId = _world.Plug(kbd);
        await _world.Toolstack.AttachAsync(_hostile.Id, _hostile.DevId, 2, busId);
        await _hostile.Frontend.WaitForPortAsync(2, true, TimeSpan.FromSeconds(5));
        GuestUsbDevice k = await GuestUsbDevice.EnumerateAsync(_hostile.Frontend, 2, 3);
        Task<UrbResult> pending = k.InterruptAsync(0x81, new byte[8]);
        await Task.Delay(20);
        Assert.That(_hostile.Frontend.InFlightRequestIds(), Has.Count.EqualTo(1));
        return pending;
    }

    [TestCase(-1, TestName = "ReqProdOneBehindReqCons_WithAnUrbInFlight_StopsOnlyThatController")]
    [TestCase(-16, TestName = "ReqProdSixteenBehind_WithAnUrbInFlight_StopsOnlyThatController")]
    [TestCase(int.MinValue, TestName = "ReqProdHalfTheIndexSpaceAway_WithAnUrbInFlight_StopsOnlyThatController")]
    [TestCase(16, TestName = "ReqProdOneMoreThanTheFreeSlots_WithAnUrbInFlight_StopsOnlyThatController")]
    public async Task ReqProdGame_WithAnUrbInFlight(int delta)
    {
        Task<UrbResult> pending = await KeyboardReadInFlightAsync();
        _hostile.Frontend.CorruptRequestProducer(unchecked(_hostile.Frontend.RequestProducer + (uint)delta));
        await AssertControllerStoppedAsync();
        GC.KeepAlive(pending);
    }

    [TestCase(1, TestName = "ConnReqProdBeyondTheDummies_StopsOnlyThatController")]
    [TestCase(-513, TestName = "ConnReqProdOneBehindWhatWasConsumed_StopsOnlyThatController")]
    [TestCase(-600, TestName = "ConnReqProdBackwards_StopsOnlyThatController")]
    public async Task ConnReqProdGame(int delta)
    {
        // The conn ring's req_prod is legitimately 512 + the events answered; the backend looks at it
        // when it has an event to send. Wait until the frontend has re-posted for the one event so far
        // (the stick), or its re-post could overwrite the corrupt index.
        while (_hostile.Frontend.ConnRequestProducer != 513)
        {
            await Task.Delay(1);
        }
        _hostile.Frontend.CorruptConnRequestProducer(unchecked(_hostile.Frontend.ConnRequestProducer + (uint)delta));
        string busId = _world.Plug(new HidKeyboardDevice());
        await _world.Toolstack.AttachAsync(_hostile.Id, _hostile.DevId, 3, busId);
        await AssertControllerStoppedAsync();
    }
}
