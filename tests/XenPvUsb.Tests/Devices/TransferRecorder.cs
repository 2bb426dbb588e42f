using XenPvUsb.Usb;

namespace XenPvUsb.Tests.Devices;

/// <summary>Records completions; <see cref="UsbTransfer.Tag"/> counts how often each transfer completed.</summary>
internal sealed class TransferRecorder : IUsbTransferOwner
{
    private readonly Lock _lock = new();
    private readonly List<UsbTransfer> _completed = new(1024);

    public IReadOnlyList<UsbTransfer> Completed
    {
        get
        {
            lock (_lock)
            {
                return [.. _completed];
            }
        }
    }

    public void OnTransferCompleted(UsbTransfer transfer)
    {
        lock (_lock)
        {
            transfer.Tag++;
            _completed.Add(transfer);
        }
    }

    public bool WaitFor(UsbTransfer transfer, TimeSpan timeout)
    {
        DateTime deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            lock (_lock)
            {
                if (transfer.Tag > 0)
                {
                    return true;
                }
            }

            Thread.Sleep(1);
        }

        return false;
    }
}
