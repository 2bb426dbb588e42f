namespace XenPvUsb.XenStore;

/// <summary>Access letter of a permission entry: <c>n</c>, <c>r</c>, <c>w</c>, <c>b</c>.</summary>
public enum XsAccess
{
    None,
    Read,
    Write,
    Both,
}
