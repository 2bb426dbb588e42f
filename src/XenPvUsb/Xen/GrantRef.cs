namespace XenPvUsb.Xen;

/// <summary>A grant reference (grant_ref_t) in a foreign domain's grant table.</summary>
public readonly record struct GrantRef(uint Value)
{
    public override string ToString() => Value.ToString(System.Globalization.CultureInfo.InvariantCulture);
}
