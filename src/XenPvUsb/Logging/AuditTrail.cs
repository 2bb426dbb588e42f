using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using Microsoft.Extensions.Logging;
using XenPvUsb.Interop.Linux;
using XenPvUsb.Usb;
using XenPvUsb.Xen;

namespace XenPvUsb.Logging;

/// <summary>What happened to a device, for the audit trail.</summary>
public enum AuditAction
{
    /// <summary>A device went to a guest's port (an assignment was carried out).</summary>
    Attach,

    /// <summary>A device left a guest's port (the assignment ended) and went back to dom0.</summary>
    Detach,

    /// <summary>An assigned device was plugged in and went to its port.</summary>
    Plug,

    /// <summary>An assigned device was unplugged; its port waits for it.</summary>
    Unplug,

    /// <summary>An assignment was not carried out (busy device, conflict, speed, no free port).</summary>
    Refuse,

    /// <summary>A policy decision kept a device from a guest (hub, usb-policy.conf, a device dom0 needs).</summary>
    Policy,
}

/// <summary>One audit record: the action, a sentence, and the fields journalctl can select on (null: not known).</summary>
public sealed record AuditRecord(AuditAction Action, string Message)
{
    public DomId? DomId { get; init; }

    public string? Domain { get; init; }

    public int? DevId { get; init; }

    public int? Port { get; init; }

    public string? BusId { get; init; }

    public string? VidPid { get; init; }

    public string? Serial { get; init; }

    public string? Rule { get; init; }

    public string? Reason { get; init; }

    /// <summary>A device in messages: its bus id, and vendor:product and serial if known.</summary>
    public static string DeviceText(string busId, UsbDeviceInfo? info) =>
        info is null ? busId : $"{busId} ({info.VendorId:x4}:{info.ProductId:x4}{(info.Serial is { } s ? $" serial {s}" : "")})";

    /// <summary>This record with the device's fields (BUSID, VID_PID, SERIAL) set.</summary>
    public AuditRecord WithDevice(string busId, UsbDeviceInfo? info) =>
        this with { BusId = busId, VidPid = info is null ? null : $"{info.VendorId:x4}:{info.ProductId:x4}", Serial = info?.Serial };
}

/// <summary>Where audit records go.</summary>
public interface IAuditTrail
{
    void Record(AuditRecord record);
}

/// <summary>
/// The daemon's audit trail: every record is logged, and where systemd's journal runs it is also sent to the
/// journal's native socket as one structured entry (MESSAGE_ID, XENPVUSB_ACTION, DOMAIN, DOMID, DEVID, PORT, BUSID,
/// VID_PID, SERIAL, RULE, REASON), so that <c>journalctl -u xenpvusbd MESSAGE_ID=… BUSID=3-1</c> answers who had a
/// device when. Values come partly from devices and guests (serials, domain names): they are sent length-prefixed
/// when they hold a newline, so no value can forge another field. Sending never blocks (a full journal queue drops
/// the structured copy, which is logged); thread-safe.
/// </summary>
public sealed unsafe class AuditTrail : IAuditTrail, IDisposable
{
    public const string JournalSocketPath = "/run/systemd/journal/socket";

    /// <summary>The first 30 hex digits of every MESSAGE_ID; the action's number (01 attach … 06 policy) ends it.</summary>
    public const string MessageIdPrefix = "5b6a0d2b7c1e4f0a9a3e0c1d2e3f4a";

    // A value longer than this is cut: journald takes 64 KiB fields, but nothing here needs more than a line.
    private const int MaxValueBytes = 1024;

    private readonly ILogger _logger;
    private readonly SafeUnixSocketHandle? _socket;
    private readonly int _addressLength;
    private readonly Lock _lock = new();
    private sockaddr_un _address;

    /// <param name="journalSocket">The journal's native socket; null: log only. Missing socket: log only.</param>
    public AuditTrail(ILogger logger, string? journalSocket = JournalSocketPath)
    {
        _logger = logger;
        if (journalSocket is not null && File.Exists(journalSocket) && UnixSocket.MakeAddress(journalSocket, out _address) is > 0 and int length)
        {
            try
            {
                _socket = SafeUnixSocketHandle.OpenDatagram();
                _addressLength = length;
            }
            catch (IOException)
            {
                _socket = null;
            }
        }
    }

    /// <summary>True if records go to the journal as structured entries.</summary>
    public bool ToJournal => _socket is not null;

    public static string MessageId(AuditAction action) => MessageIdPrefix + ((int)action + 1).ToString("x2", CultureInfo.InvariantCulture);

    public void Record(AuditRecord record)
    {
        ArgumentNullException.ThrowIfNull(record);
        _logger.Audit(record.Action, record.Message);
        if (_socket is null)
        {
            return;
        }
        byte[] entry = Format(record);
        int rc;
        lock (_lock)
        {
            fixed (sockaddr_un* address = &_address)
            {
                rc = UnixSocket.Send(_socket, address, _addressLength, entry, []);
            }
        }
        if (rc < 0)
        {
            _logger.AuditNotJournalled(-rc);
        }
    }

    /// <summary>The entry in the journal's native protocol (systemd's JOURNAL_NATIVE_PROTOCOL).</summary>
    public static byte[] Format(AuditRecord record)
    {
        ArgumentNullException.ThrowIfNull(record);
        using var stream = new MemoryStream();
        Field(stream, "MESSAGE", record.Message);
        Field(stream, "MESSAGE_ID", MessageId(record.Action));
        Field(stream, "PRIORITY", record.Action is AuditAction.Refuse or AuditAction.Policy ? "5" : "6");
        Field(stream, "SYSLOG_IDENTIFIER", "xenpvusbd");
        Field(stream, "XENPVUSB_ACTION", record.Action.ToString().ToLowerInvariant());
        Field(stream, "DOMAIN", record.Domain);
        Field(stream, "DOMID", record.DomId?.Value.ToString(CultureInfo.InvariantCulture));
        Field(stream, "DEVID", record.DevId?.ToString(CultureInfo.InvariantCulture));
        Field(stream, "PORT", record.Port?.ToString(CultureInfo.InvariantCulture));
        Field(stream, "BUSID", record.BusId);
        Field(stream, "VID_PID", record.VidPid);
        Field(stream, "SERIAL", record.Serial);
        Field(stream, "RULE", record.Rule);
        Field(stream, "REASON", record.Reason);
        return stream.ToArray();
    }

    private static void Field(MemoryStream stream, string name, string? value)
    {
        if (value is null)
        {
            return;
        }
        byte[] bytes = Encoding.UTF8.GetBytes(value);
        if (bytes.Length > MaxValueBytes)
        {
            bytes = bytes[..MaxValueBytes];
        }
        stream.Write(Encoding.ASCII.GetBytes(name));
        if (Array.IndexOf(bytes, (byte)'\n') < 0)
        {
            stream.WriteByte((byte)'=');
            stream.Write(bytes);
        }
        else
        {
            // NAME\n, then the value's length as 64-bit little endian, then the value.
            Span<byte> length = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)bytes.Length);
            stream.WriteByte((byte)'\n');
            stream.Write(length);
            stream.Write(bytes);
        }
        stream.WriteByte((byte)'\n');
    }

    public void Dispose() => _socket?.Dispose();
}

/// <summary>An audit trail that only logs (tests, the simulated host without a journal).</summary>
public sealed class LoggedAuditTrail(ILogger logger) : IAuditTrail
{
    public void Record(AuditRecord record)
    {
        ArgumentNullException.ThrowIfNull(record);
        logger.Audit(record.Action, record.Message);
    }
}

internal static partial class AuditLog
{
    [LoggerMessage(EventId = 250, Level = LogLevel.Information, Message = "audit {Action}: {Message}")]
    public static partial void Audit(this ILogger logger, AuditAction action, string message);

    [LoggerMessage(EventId = 251, Level = LogLevel.Warning, Message = "the journal did not take an audit record (errno {Errno}); it is in this log only")]
    public static partial void AuditNotJournalled(this ILogger logger, int errno);
}
