namespace XenPvUsb.Xen;

/// <summary>An event channel port number (evtchn_port_t).</summary>
public readonly record struct EvtchnPort(uint Value)
{
    public override string ToString() => Value.ToString(System.Globalization.CultureInfo.InvariantCulture);
}
