namespace XenPvUsb.Usb;

/// <summary>Linux USB bus ids ("1-2", "3-1.5", root hubs "usb1"), checked before they name a sysfs path.</summary>
public static class BusId
{
    /// <summary>
    /// True for "usbN" or "&lt;bus&gt;-&lt;port&gt;[.&lt;port&gt;]*" with bus 1..999, ports 1..255 and at most 7
    /// tiers. Guards every path built from toolstack or guest input.
    /// </summary>
    public static bool IsValid(string? busId)
    {
        if (string.IsNullOrEmpty(busId) || busId.Length > 32)
        {
            return false;
        }
        ReadOnlySpan<char> s = busId;
        if (s.StartsWith("usb", StringComparison.Ordinal))
        {
            return IsNumber(s[3..], 1, 999);
        }
        int dash = s.IndexOf('-');
        if (dash <= 0 || !IsNumber(s[..dash], 1, 999))
        {
            return false;
        }
        s = s[(dash + 1)..];
        int tiers = 0;
        while (true)
        {
            int dot = s.IndexOf('.');
            ReadOnlySpan<char> part = dot < 0 ? s : s[..dot];
            if (!IsNumber(part, 1, 255) || ++tiers > 7)
            {
                return false;
            }
            if (dot < 0)
            {
                return true;
            }
            s = s[(dot + 1)..];
        }
    }

    /// <summary>The bus number of a valid device bus id ("3-1.5" → 3).</summary>
    public static int BusNumber(string busId) => int.Parse(busId.AsSpan(0, busId.IndexOf('-')), System.Globalization.CultureInfo.InvariantCulture);

    private static bool IsNumber(ReadOnlySpan<char> s, int min, int max)
    {
        if (s.Length == 0 || s.Length > 3 || (s.Length > 1 && s[0] == '0'))
        {
            return false;
        }
        int v = 0;
        foreach (char c in s)
        {
            if (c < '0' || c > '9')
            {
                return false;
            }
            v = (v * 10) + (c - '0');
        }
        return v >= min && v <= max;
    }
}
