using XenPvUsb.Host;
using XenPvUsb.Usb;

namespace XenPvUsb.Bench;

/// <summary>A USB host whose every valid bus id holds a device that completes each transfer at once, moving no data.</summary>
internal sealed class NullUsbHost : IUsbHost
{
    public event Action<UsbHotplugEvent>? Hotplug
    {
        add { }
        remove { }
    }

    public IReadOnlyList<UsbDeviceInfo> Enumerate() => [];

    public Task HandBackAsync(string busId) => Task.CompletedTask;

    public UsbDeviceInfo? Find(string busId) => UsbSysfs.IsValidBusId(busId)
        ? new UsbDeviceInfo(busId, 1, 2, 0x1209, 0x0001, 0, UsbSpeed.High, 0, null, "null device", null)
        : null;

    public IUsbHostDevice Open(string busId) => new NullDevice(busId);

    private sealed class NullDevice : IUsbHostDevice
    {
        private static readonly Task<int> s_ok = Task.FromResult(0);

        public NullDevice(string busId)
        {
            BusId = busId;
        }

        public string BusId { get; }

        public UsbSpeed Speed => UsbSpeed.High;

        public void Submit(UsbTransfer transfer) => transfer.Complete(0, transfer.Type == UsbTransferType.Control ? transfer.Length - UsbTransfer.SetupSize : transfer.Length);

        public void Cancel(UsbTransfer transfer)
        {
        }

        public Task Released => Task.CompletedTask;

        public Task<int> SetConfigurationAsync(int configurationValue) => s_ok;

        public Task<int> SetInterfaceAsync(int interfaceNumber, int alternateSetting) => s_ok;

        public Task<int> ClearHaltAsync(byte endpoint) => s_ok;

        public Task<int> ResetAsync() => s_ok;

        public void Close()
        {
        }

        public void Forget(UsbTransfer transfer)
        {
        }

        public void Dispose()
        {
        }
    }
}
