using global::XenPvUsb.Usbif;
using XenPvUsb.Simulation.Devices;
using XenPvUsb.Simulation.Guest;
using XenPvUsb.Tests.Support;
using XenPvUsb.Usb;

namespace XenPvUsb.Tests.Backend;

/// <summary>
/// A failure inside one controller's own work (our bug, not the guest's) stops that controller only:
/// what it had in flight is answered, the guest's driver can shut down cleanly, the loop and every other
/// guest go on.
/// </summary>
[TestFixture]
public sealed class ContainmentTests
{
    private SimWorld _world = null!;
    private GuestHandle _bystander = null!;
    private GuestMassStorage _bystanderStorage = null!;

    [SetUp]
    public async Task StartWorld()
    {
        _world = await SimWorld.StartAsync();
        _bystander = await _world.AddGuestAsync("bystander", 2, 2, _world.PlugStick(seed: 21));
        _bystanderStorage = new GuestMassStorage(await GuestUsbDevice.EnumerateAsync(_bystander.Frontend, 1, 2));
        await _bystanderStorage.ReadCapacityAsync();
    }

    [TearDown]
    public async Task StopWorld()
    {
        byte[] buf = new byte[64 * 512];
        await _bystanderStorage.ReadAsync(0, buf).WaitAsync(TimeSpan.FromSeconds(10));
        Assert.That(_bystander.Frontend.ProtocolError, Is.Null);
        Assert.That(_world.Loop.Completion.IsCompleted, Is.False, "the event loop never stopped");
        await _world.DisposeAsync();
    }

    [TestCase(FaultyDevice.Fault.Submit, TestName = "ExceptionWhileSubmitting_ClosesOnlyThatController_AndAnswersWhatWasInFlight")]
    [TestCase(FaultyDevice.Fault.Completion, TestName = "ExceptionWhileCompleting_ClosesOnlyThatController_AndAnswersWhatWasInFlight")]
    public async Task ControllerBug(FaultyDevice.Fault fault)
    {
        string stick = _world.PlugStick(seed: 22);
        string kbd = _world.Plug(new HidKeyboardDevice());
        FaultyDevice? faulty = null;
        _world.Usb.Wrap(stick, d => faulty = new FaultyDevice(d));
        GuestHandle g = await _world.AddGuestAsync("victim", 2, 2, stick, kbd);
        var storage = new GuestMassStorage(await GuestUsbDevice.EnumerateAsync(g.Frontend, 1, 2));
        await storage.ReadCapacityAsync();
        GuestUsbDevice k = await GuestUsbDevice.EnumerateAsync(g.Frontend, 2, 3);
        Task<UrbResult> keyboardRead = k.InterruptAsync(0x81, new byte[8]);
        await Task.Delay(20);

        faulty!.Armed = fault;
        Task read = storage.ReadAsync(0, new byte[4096]);

        await g.Frontend.ShutdownCompleted.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.That(g.Frontend.HungOnRemoval, Is.False, "every URB in flight was answered");
        Assert.That(g.Frontend.ProtocolError, Is.Null);
        Assert.That((await keyboardRead.WaitAsync(TimeSpan.FromSeconds(5))).Status, Is.Not.EqualTo(0));
        Assert.That(async () => await read.WaitAsync(TimeSpan.FromSeconds(5)), Throws.Exception);
        await _world.WaitForStateAsync($"/local/domain/0/backend/vusb/{g.Id.Value}/{g.DevId}/state", "6");
        Assert.That(_world.Registry.Count, Is.EqualTo(2), "the failed controller's nodes are still served (a re-probe can reconnect)");
    }

    /// <summary>A device wrapper that makes the controller's own code throw: from Submit, or by completing with a slot index that does not exist.</summary>
    public sealed class FaultyDevice : IUsbHostDevice
    {
        private readonly IUsbHostDevice _inner;

        public FaultyDevice(IUsbHostDevice inner)
        {
            _inner = inner;
        }

        public enum Fault
        {
            None,
            Submit,
            Completion,
        }

        public Fault Armed { get; set; }

        public string BusId => _inner.BusId;

        public UsbSpeed Speed => _inner.Speed;

        public Task Released => _inner.Released;

        public void Submit(UsbTransfer transfer)
        {
            switch (Armed)
            {
                case Fault.Submit:
                    throw new InvalidOperationException("injected: a bug on the submit path");
                case Fault.Completion:
                    transfer.Tag = 9999;
                    transfer.Complete(0, 0);
                    return;
                default:
                    _inner.Submit(transfer);
                    return;
            }
        }

        public void Cancel(UsbTransfer transfer) => _inner.Cancel(transfer);

        public Task<int> SetConfigurationAsync(int configurationValue) => _inner.SetConfigurationAsync(configurationValue);

        public Task<int> SetInterfaceAsync(int interfaceNumber, int alternateSetting) => _inner.SetInterfaceAsync(interfaceNumber, alternateSetting);

        public Task<int> ClearHaltAsync(byte endpoint) => _inner.ClearHaltAsync(endpoint);

        public Task<int> ResetAsync() => _inner.ResetAsync();

        public void Close() => _inner.Close();

        public void Forget(UsbTransfer transfer) => _inner.Forget(transfer);

        public void Dispose() => _inner.Dispose();
    }
}
