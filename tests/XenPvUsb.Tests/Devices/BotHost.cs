using System.Buffers.Binary;
using XenPvUsb.Simulation.Devices;
using XenPvUsb.Usb;

namespace XenPvUsb.Tests.Devices;

/// <summary>Drives a mass storage device through raw Bulk-Only Transport transfers, as usb-storage does.</summary>
internal sealed class BotHost
{
    private readonly IUsbHostDevice _device;
    private uint _tag = 0x1000;

    public BotHost(IUsbHostDevice device)
    {
        _device = device;
    }

    public TransferRecorder Recorder { get; } = new();

    public uint LastTag => _tag;

    public static byte[] Cbw(uint tag, uint dataLength, bool dataIn, ReadOnlySpan<byte> cdb, byte lun = 0)
    {
        byte[] cbw = new byte[31];
        BinaryPrimitives.WriteUInt32LittleEndian(cbw, 0x43425355);
        BinaryPrimitives.WriteUInt32LittleEndian(cbw.AsSpan(4), tag);
        BinaryPrimitives.WriteUInt32LittleEndian(cbw.AsSpan(8), dataLength);
        cbw[12] = dataIn ? (byte)0x80 : (byte)0x00;
        cbw[13] = lun;
        cbw[14] = (byte)cdb.Length;
        cdb.CopyTo(cbw.AsSpan(15));
        return cbw;
    }

    public static byte[] Read10(uint lba, ushort blocks) =>
        [0x28, 0, (byte)(lba >> 24), (byte)(lba >> 16), (byte)(lba >> 8), (byte)lba, 0, (byte)(blocks >> 8), (byte)blocks, 0];

    public static byte[] Write10(uint lba, ushort blocks) =>
        [0x2A, 0, (byte)(lba >> 24), (byte)(lba >> 16), (byte)(lba >> 8), (byte)lba, 0, (byte)(blocks >> 8), (byte)blocks, 0];

    public UsbTransfer SendCbw(uint dataLength, bool dataIn, ReadOnlySpan<byte> cdb)
    {
        _tag++;
        UsbTransfer transfer = Out(Cbw(_tag, dataLength, dataIn, cdb));
        Assert.That(transfer.Status, Is.Zero, "CBW");
        return transfer;
    }

    public UsbTransfer In(int length, bool shortNotOk = false) =>
        UsbTestIo.Data(_device, Recorder, UsbTransferType.Bulk, MassStorageDevice.BulkInEndpoint, length, shortNotOk: shortNotOk);

    public UsbTransfer Out(ReadOnlySpan<byte> data) =>
        UsbTestIo.Data(_device, Recorder, UsbTransferType.Bulk, MassStorageDevice.BulkOutEndpoint, data.Length, data);

    /// <summary>Reads the CSW, clearing an IN halt first if the data phase ended in a stall.</summary>
    public (uint Residue, byte Status) ReadCsw()
    {
        UsbTransfer csw = In(13);
        if (csw.Status == UrbStatus.Epipe)
        {
            Assert.That(_device.ClearHaltAsync(MassStorageDevice.BulkInEndpoint).Result, Is.Zero);
            csw = In(13);
        }

        Assert.That(csw.Status, Is.Zero, "CSW transfer");
        Assert.That(csw.ActualLength, Is.EqualTo(13));
        Assert.That(BinaryPrimitives.ReadUInt32LittleEndian(csw.Buffer), Is.EqualTo(0x53425355), "CSW signature");
        Assert.That(BinaryPrimitives.ReadUInt32LittleEndian(csw.Buffer.AsSpan(4)), Is.EqualTo(_tag), "CSW tag");
        return (BinaryPrimitives.ReadUInt32LittleEndian(csw.Buffer.AsSpan(8)), csw.Buffer[12]);
    }

    /// <summary>A whole command with a data-in phase read in one URB; returns the data and the CSW.</summary>
    public (byte[] Data, uint Residue, byte Status) CommandIn(ReadOnlySpan<byte> cdb, int length)
    {
        SendCbw((uint)length, true, cdb);
        byte[] data = [];
        if (length > 0)
        {
            UsbTransfer transfer = In(length);
            Assert.That(transfer.Status, Is.EqualTo(UrbStatus.Success).Or.EqualTo(UrbStatus.Epipe));
            data = transfer.Buffer.AsSpan(0, transfer.ActualLength).ToArray();
        }

        (uint residue, byte status) = ReadCsw();
        return (data, residue, status);
    }

    /// <summary>REQUEST SENSE: (sense key, ASC, ASCQ).</summary>
    public (byte Key, byte Asc, byte Ascq) RequestSense()
    {
        (byte[] data, _, byte status) = CommandIn([0x03, 0, 0, 0, 18, 0], 18);
        Assert.That(status, Is.Zero, "REQUEST SENSE status");
        Assert.That(data, Has.Length.EqualTo(18));
        Assert.That(data[0], Is.EqualTo(0x70), "fixed format, current");
        return ((byte)(data[2] & 0x0F), data[12], data[13]);
    }
}
