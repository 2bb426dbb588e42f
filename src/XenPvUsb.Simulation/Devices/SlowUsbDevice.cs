using XenPvUsb.Usb;

namespace XenPvUsb.Simulation.Devices;

/// <summary>
/// A device that takes its time, around another one: device operations (SET_CONFIGURATION, SET_INTERFACE,
/// CLEAR_HALT, reset) block a thread for <see cref="OperationDelay"/> as a slow ioctl would, transfers on
/// <see cref="HungEndpoint"/> never complete, and with <see cref="IgnoresCancels"/> a cancel is never
/// answered (as a device or host controller that does not give URBs back). Disposing ends the hung
/// transfers (-ENODEV), as closing a usbfs node does; <see cref="Released"/> waits for operations still
/// blocked, as a serial worker would.
/// </summary>
public sealed class SlowUsbDevice : IUsbHostDevice
{
    private readonly IUsbHostDevice _inner;
    private readonly Lock _lock = new();
    private readonly List<UsbTransfer> _hung = new();
    private readonly List<Task> _operations = new();
    private Task? _released;

    public SlowUsbDevice(IUsbHostDevice inner)
    {
        _inner = inner;
    }

    public string BusId => _inner.BusId;

    public UsbSpeed Speed => _inner.Speed;

    /// <summary>How long each device operation blocks its thread.</summary>
    public TimeSpan OperationDelay { get; set; }

    /// <summary>Endpoint address (with direction bit) whose transfers never complete; null for none.</summary>
    public byte? HungEndpoint { get; set; }

    /// <summary>Cancels are swallowed: a cancelled transfer stays pending until the device is disposed.</summary>
    public bool IgnoresCancels { get; set; }

    /// <summary>A cancel takes effect this long after it was asked for (as an HCD that unlinks at the next frame boundary, slowly).</summary>
    public TimeSpan CancelDelay { get; set; }

    /// <summary>Device operations started and not yet returned.</summary>
    public int OperationsInProgress
    {
        get
        {
            lock (_lock)
            {
                return _operations.Count(static t => !t.IsCompleted);
            }
        }
    }

    public Task Released => _released ?? Task.CompletedTask;

    public void Submit(UsbTransfer transfer)
    {
        if (HungEndpoint is { } ep && transfer.Type != UsbTransferType.Control && transfer.Endpoint == ep)
        {
            lock (_lock)
            {
                _hung.Add(transfer);
            }
            return;
        }
        _inner.Submit(transfer);
    }

    public void Cancel(UsbTransfer transfer)
    {
        if (IgnoresCancels)
        {
            return;
        }
        bool wasHung;
        lock (_lock)
        {
            wasHung = _hung.Remove(transfer);
        }
        if (wasHung)
        {
            transfer.Complete(-2, 0); // -ENOENT
            return;
        }
        if (CancelDelay > TimeSpan.Zero)
        {
            _ = Task.Delay(CancelDelay).ContinueWith(_ => _inner.Cancel(transfer), TaskScheduler.Default);
            return;
        }
        _inner.Cancel(transfer);
    }

    public Task<int> SetConfigurationAsync(int configurationValue) => Slowly(() => _inner.SetConfigurationAsync(configurationValue));

    public Task<int> SetInterfaceAsync(int interfaceNumber, int alternateSetting) => Slowly(() => _inner.SetInterfaceAsync(interfaceNumber, alternateSetting));

    public Task<int> ClearHaltAsync(byte endpoint) => Slowly(() => _inner.ClearHaltAsync(endpoint));

    public Task<int> ResetAsync() => Slowly(() => _inner.ResetAsync());

    public void Forget(UsbTransfer transfer) => _inner.Forget(transfer);

    public void Close() => Dispose();

    public void Dispose()
    {
        UsbTransfer[] hung;
        Task[] operations;
        lock (_lock)
        {
            if (_released is not null)
            {
                return;
            }
            hung = [.. _hung];
            _hung.Clear();
            operations = [.. _operations];
            _released = Task.WhenAll(operations).ContinueWith(_ => _inner.Dispose(), TaskScheduler.Default);
        }
        foreach (UsbTransfer t in hung)
        {
            t.Complete(-19, 0); // -ENODEV: the node is closed
        }
    }

    private Task<int> Slowly(Func<Task<int>> operation)
    {
        TimeSpan delay = OperationDelay;
        Task<int> t = Task.Factory.StartNew(() =>
        {
            // Blocks a thread, as a slow ioctl does; the event loop must not be that thread.
            Thread.Sleep(delay);
            return operation().GetAwaiter().GetResult();
        }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        lock (_lock)
        {
            _operations.RemoveAll(static o => o.IsCompleted);
            _operations.Add(t);
        }
        return t;
    }
}
