namespace XenPvUsb.Xen;

/// <summary>A Xen domain id (domid_t).</summary>
public readonly record struct DomId(ushort Value)
{
    public static readonly DomId Dom0 = new(0);

    public override string ToString() => Value.ToString(System.Globalization.CultureInfo.InvariantCulture);
}
