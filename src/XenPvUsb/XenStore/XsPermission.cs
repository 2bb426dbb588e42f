using System.Globalization;
using XenPvUsb.Xen;

namespace XenPvUsb.XenStore;

/// <summary>
/// One node permission entry, wire form <c>&lt;letter&gt;&lt;domid&gt;</c> (e.g. <c>r5</c>). In a node's list the first entry
/// names the owner and its letter is the access for every domain not listed (§4.3).
/// </summary>
public readonly record struct XsPermission(XsAccess Access, DomId Domain)
{
    public bool CanRead => Access is XsAccess.Read or XsAccess.Both;

    public bool CanWrite => Access is XsAccess.Write or XsAccess.Both;

    public static XsPermission Parse(string s)
    {
        if (!TryParse(s, out XsPermission permission))
        {
            throw new FormatException($"'{s}' is not a xenstore permission (expected n|r|w|b followed by a domid).");
        }

        return permission;
    }

    public static bool TryParse(string? s, out XsPermission permission)
    {
        permission = default;
        if (s is null || s.Length < 2)
        {
            return false;
        }

        XsAccess? access = s[0] switch
        {
            'n' => XsAccess.None,
            'r' => XsAccess.Read,
            'w' => XsAccess.Write,
            'b' => XsAccess.Both,
            _ => null,
        };
        if (access is null || !char.IsAsciiDigit(s[1])
            || !ushort.TryParse(s.AsSpan(1), NumberStyles.None, CultureInfo.InvariantCulture, out ushort domid))
        {
            return false;
        }

        permission = new XsPermission(access.Value, new DomId(domid));
        return true;
    }

    public override string ToString()
    {
        char letter = Access switch
        {
            XsAccess.Read => 'r',
            XsAccess.Write => 'w',
            XsAccess.Both => 'b',
            _ => 'n',
        };
        return string.Create(CultureInfo.InvariantCulture, $"{letter}{Domain.Value}");
    }
}
