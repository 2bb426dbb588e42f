using XenPvUsb.Simulation.Devices;
using XenPvUsb.Usb;

namespace XenPvUsb.Tests.Devices;

/// <summary>Builds and submits usbfs-shaped transfers the way the backend does.</summary>
internal static class UsbTestIo
{
    public static UsbTransfer Control(
        IUsbHostDevice device,
        TransferRecorder recorder,
        byte requestType,
        byte request,
        ushort value,
        ushort index,
        ushort length,
        ReadOnlySpan<byte> outData = default,
        bool shortNotOk = false)
    {
        var transfer = new UsbTransfer(UsbTransfer.SetupSize + length)
        {
            Type = UsbTransferType.Control,
            Endpoint = (byte)(requestType & 0x80),
            Length = UsbTransfer.SetupSize + length,
            ShortNotOk = shortNotOk,
            Owner = recorder,
        };
        new UsbSetupPacket(requestType, request, value, index, length).Write(transfer.Buffer);
        outData.CopyTo(transfer.Buffer.AsSpan(UsbTransfer.SetupSize));
        device.Submit(transfer);
        return transfer;
    }

    /// <summary>A standard GET_DESCRIPTOR to the device; returns the data stage actually received.</summary>
    public static byte[] GetDescriptor(IUsbHostDevice device, byte type, byte index, ushort length, ushort langId = 0)
    {
        var recorder = new TransferRecorder();
        UsbTransfer transfer = Control(device, recorder, 0x80, 0x06, (ushort)((type << 8) | index), langId, length);
        Assert.That(transfer.Status, Is.Zero, $"GET_DESCRIPTOR type {type} index {index}");
        return transfer.Data[..transfer.ActualLength].ToArray();
    }

    /// <summary>An isochronous transfer with one packet per length, laid out back to back as usbfs wants them.</summary>
    public static UsbTransfer Isochronous(
        IUsbHostDevice device,
        TransferRecorder recorder,
        byte endpoint,
        ReadOnlySpan<int> packetLengths,
        ReadOnlySpan<byte> outData = default)
    {
        int total = 0;
        foreach (int length in packetLengths)
        {
            total += Math.Max(length, 0);
        }

        var transfer = new UsbTransfer(Math.Max(total, 1))
        {
            Type = UsbTransferType.Isochronous,
            Endpoint = endpoint,
            Length = total,
            NumberOfPackets = packetLengths.Length,
            Owner = recorder,
        };
        for (int i = 0; i < packetLengths.Length && i < UsbTransfer.MaxIsoPackets; i++)
        {
            transfer.IsoPackets[i].Length = packetLengths[i];
        }

        outData.CopyTo(transfer.Buffer);
        device.Submit(transfer);
        return transfer;
    }

    public static UsbTransfer Data(
        IUsbHostDevice device,
        TransferRecorder recorder,
        UsbTransferType type,
        byte endpoint,
        int length,
        ReadOnlySpan<byte> outData = default,
        bool shortNotOk = false)
    {
        var transfer = new UsbTransfer(Math.Max(length, 1))
        {
            Type = type,
            Endpoint = endpoint,
            Length = length,
            ShortNotOk = shortNotOk,
            Owner = recorder,
        };
        outData.CopyTo(transfer.Buffer);
        device.Submit(transfer);
        return transfer;
    }
}
