namespace XenPvUsb.Backend;

/// <summary>
/// backend/vusb/&lt;domid&gt;/&lt;devid&gt;/port-status/&lt;port&gt;: the daemon's verdict on a port's
/// assignment, for whoever wrote port/&lt;port&gt; (the CLI waits for it): "attached BUSID", "waiting BUSID"
/// (assigned, not plugged in: attached when it is), "refused BUSID: REASON" (and port/&lt;port&gt; emptied).
/// Absent while the port is empty. Our own node: the guest can read it, not write it.
/// </summary>
public readonly record struct PortStatus(string Verdict, string BusId, string? Reason)
{
    public const string Directory = "port-status";
    public const string Attached = "attached";
    public const string Waiting = "waiting";
    public const string Refused = "refused";

    public override string ToString() => Reason is null ? $"{Verdict} {BusId}" : $"{Verdict} {BusId}: {Reason}";

    public static PortStatus? Parse(string? text)
    {
        if (string.IsNullOrEmpty(text))
        {
            return null;
        }
        int space = text.IndexOf(' ', StringComparison.Ordinal);
        if (space <= 0)
        {
            return null;
        }
        string verdict = text[..space];
        string rest = text[(space + 1)..];
        int colon = rest.IndexOf(": ", StringComparison.Ordinal);
        return colon < 0 ? new PortStatus(verdict, rest, null) : new PortStatus(verdict, rest[..colon], rest[(colon + 2)..]);
    }
}
