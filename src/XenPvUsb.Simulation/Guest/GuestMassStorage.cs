using System.Buffers.Binary;
using System.Text;
using XenPvUsb.Usb;
using XenPvUsb.Usbif;

namespace XenPvUsb.Simulation.Guest;

/// <summary>The guest's usb-storage, reduced to what reading and writing a stick needs: Bulk-Only Transport and a few SCSI commands.</summary>
public sealed class GuestMassStorage
{
    /// <summary>Blocks per READ(10)/WRITE(10): 60 KiB, one URB of 15 pages (xen-hcd allows at most 16).</summary>
    public const int BlocksPerCommand = 120;

    private const uint CbwSignature = 0x43425355;
    private const uint CswSignature = 0x53425355;

    private readonly GuestUsbDevice _device;
    private readonly byte _bulkIn;
    private readonly byte _bulkOut;
    private readonly byte[] _cbw = new byte[31];
    private readonly byte[] _csw = new byte[13];
    private uint _tag;

    public GuestMassStorage(GuestUsbDevice device)
    {
        if (device.InterfaceClass != 8 || device.InterfaceProtocol != 0x50)
        {
            throw new ArgumentException("not a Bulk-Only mass storage device", nameof(device));
        }
        _device = device;
        _bulkIn = device.FindEndpoint(UsbTransferType.Bulk, true)?.Address ?? throw new ArgumentException("no bulk IN endpoint", nameof(device));
        _bulkOut = device.FindEndpoint(UsbTransferType.Bulk, false)?.Address ?? throw new ArgumentException("no bulk OUT endpoint", nameof(device));
    }

    public int BlockSize { get; private set; } = 512;

    /// <summary>
    /// Reads move their data as one URB per page, all queued at once with SHORT_NOT_OK, as Linux
    /// usb-storage does through xen-hcd for a read into scattered pages (usb_sg_init). Off: one URB.
    /// </summary>
    public bool ScatterReads { get; set; }

    /// <summary>As <see cref="ScatterReads"/>, for the data phase of writes (bulk OUT, one URB per page).</summary>
    public bool ScatterWrites { get; set; }

    public long BlockCount { get; private set; }

    public async Task<string> InquiryAsync(CancellationToken cancellationToken = default)
    {
        byte[] data = new byte[36];
        byte[] cdb = [0x12, 0, 0, 0, 36, 0];
        await CommandAsync(cdb, data, isIn: true, cancellationToken).ConfigureAwait(false);
        return $"{Encoding.ASCII.GetString(data, 8, 8).Trim()} {Encoding.ASCII.GetString(data, 16, 16).Trim()}";
    }

    public Task TestUnitReadyAsync(CancellationToken cancellationToken = default) =>
        CommandAsync(new byte[6], Memory<byte>.Empty, isIn: false, cancellationToken);

    public async Task ReadCapacityAsync(CancellationToken cancellationToken = default)
    {
        byte[] data = new byte[8];
        byte[] cdb = new byte[10];
        cdb[0] = 0x25;
        await CommandAsync(cdb, data, isIn: true, cancellationToken).ConfigureAwait(false);
        BlockCount = (long)BinaryPrimitives.ReadUInt32BigEndian(data) + 1;
        BlockSize = (int)BinaryPrimitives.ReadUInt32BigEndian(data.AsSpan(4));
    }

    /// <summary>
    /// Reset recovery after a transport error, as usb-storage's usb_stor_Bulk_reset does: Bulk-Only Mass
    /// Storage Reset, then CLEAR_FEATURE(HALT) on both bulk endpoints (BOT §5.3.4).
    /// </summary>
    public async Task ResetRecoveryAsync(CancellationToken cancellationToken = default)
    {
        Check(await _device.ControlAsync(0x21, 0xFF, 0, 0, Memory<byte>.Empty, cancellationToken).ConfigureAwait(false), "Bulk-Only reset");
        Check(await _device.ClearHaltAsync(_bulkIn, cancellationToken).ConfigureAwait(false), "clear halt IN");
        Check(await _device.ClearHaltAsync(_bulkOut, cancellationToken).ConfigureAwait(false), "clear halt OUT");
    }

    public Task ReadAsync(uint lba, Memory<byte> destination, CancellationToken cancellationToken = default) =>
        TransferAsync(0x28, lba, destination, isIn: true, cancellationToken);

    public Task WriteAsync(uint lba, Memory<byte> source, CancellationToken cancellationToken = default) =>
        TransferAsync(0x2a, lba, source, isIn: false, cancellationToken);

    private Task TransferAsync(byte opcode, uint lba, Memory<byte> data, bool isIn, CancellationToken cancellationToken)
    {
        if (data.Length % BlockSize != 0)
        {
            throw new ArgumentException("whole blocks only", nameof(data));
        }
        byte[] cdb = new byte[10];
        cdb[0] = opcode;
        BinaryPrimitives.WriteUInt32BigEndian(cdb.AsSpan(2), lba);
        BinaryPrimitives.WriteUInt16BigEndian(cdb.AsSpan(7), (ushort)(data.Length / BlockSize));
        return CommandAsync(cdb, data, isIn, cancellationToken);
    }

    /// <summary>CBW, data phase, CSW; a stall on the data phase is cleared and the CSW read as BOT says.</summary>
    private async Task CommandAsync(byte[] cdb, Memory<byte> data, bool isIn, CancellationToken cancellationToken)
    {
        uint tag = ++_tag;
        Array.Clear(_cbw);
        BinaryPrimitives.WriteUInt32LittleEndian(_cbw, CbwSignature);
        BinaryPrimitives.WriteUInt32LittleEndian(_cbw.AsSpan(4), tag);
        BinaryPrimitives.WriteUInt32LittleEndian(_cbw.AsSpan(8), (uint)data.Length);
        _cbw[12] = isIn ? (byte)0x80 : (byte)0;
        _cbw[14] = (byte)cdb.Length;
        cdb.CopyTo(_cbw, 15);
        Check(await _device.BulkAsync(_bulkOut, _cbw, cancellationToken).ConfigureAwait(false), "CBW");
        if (data.Length > 0)
        {
            UrbResult r = (isIn ? ScatterReads : ScatterWrites)
                ? await ScatterAsync(isIn ? _bulkIn : _bulkOut, data, cancellationToken).ConfigureAwait(false)
                : await _device.BulkAsync(isIn ? _bulkIn : _bulkOut, data, cancellationToken).ConfigureAwait(false);
            if (r.Status == Usbif.Usbif.USBIF_STATUS_STALL)
            {
                await _device.ClearHaltAsync(isIn ? _bulkIn : _bulkOut, cancellationToken).ConfigureAwait(false);
            }
            else
            {
                Check(r, "data phase");
            }
        }
        UrbResult c = await _device.BulkAsync(_bulkIn, _csw, cancellationToken).ConfigureAwait(false);
        Check(c, "CSW");
        if (c.ActualLength != 13 || BinaryPrimitives.ReadUInt32LittleEndian(_csw) != CswSignature || BinaryPrimitives.ReadUInt32LittleEndian(_csw.AsSpan(4)) != tag)
        {
            throw new IOException("invalid CSW");
        }
        if (_csw[12] != 0)
        {
            throw new IOException($"SCSI command 0x{cdb[0]:x2} failed (CSW status {_csw[12]})");
        }
    }

    /// <summary>One URB per page; the first that did not succeed fully is the result (usb_sg_wait's io->status).</summary>
    private async Task<UrbResult> ScatterAsync(byte endpoint, Memory<byte> data, CancellationToken cancellationToken)
    {
        var pieces = new List<Memory<byte>>();
        for (int off = 0; off < data.Length; off += 4096)
        {
            pieces.Add(data.Slice(off, Math.Min(4096, data.Length - off)));
        }
        UrbResult[] results = await _device.BulkManyAsync(endpoint, pieces, shortNotOk: (endpoint & 0x80) != 0, cancellationToken).ConfigureAwait(false);
        foreach (UrbResult r in results)
        {
            if (!r.Ok)
            {
                return r;
            }
        }
        return results[^1];
    }

    private static void Check(UrbResult r, string phase)
    {
        if (!r.Ok)
        {
            throw new IOException($"{phase} failed with usbif status {r.Status}");
        }
    }
}
