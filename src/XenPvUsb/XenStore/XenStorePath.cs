namespace XenPvUsb.XenStore;

/// <summary>Path rules from docs/misc/xenstore.txt and xs_wire.h (§4.1 of host-interfaces.md).</summary>
public static class XenStorePath
{
    public const string IntroduceDomain = "@introduceDomain";
    public const string ReleaseDomain = "@releaseDomain";

    public static bool IsAbsolute(string path) => path.StartsWith('/');

    public static bool IsSpecial(string path) => path.StartsWith('@');

    /// <summary>
    /// Allowed: ASCII alphanumerics and <c>-/_@</c>; not empty; no <c>//</c>; no trailing <c>/</c> except the root;
    /// absolute ≤ 3072, relative ≤ 2048 characters. Special (<c>@</c>) names are only valid when <paramref name="allowSpecial"/>.
    /// </summary>
    public static bool IsValid(string? path, bool allowSpecial = false)
    {
        if (string.IsNullOrEmpty(path))
        {
            return false;
        }

        if (IsSpecial(path) && !allowSpecial)
        {
            return false;
        }

        int max = IsAbsolute(path) ? XsCodec.AbsPathMax : XsCodec.RelPathMax;
        if (path.Length > max)
        {
            return false;
        }

        if (path == "/")
        {
            return true;
        }

        if (path.EndsWith('/') || path.Contains("//", StringComparison.Ordinal))
        {
            return false;
        }

        foreach (char c in path)
        {
            if (!(char.IsAsciiLetterOrDigit(c) || c is '-' or '/' or '_' or '@'))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>True when <paramref name="path"/> equals <paramref name="ancestor"/> or lies below it (both absolute).</summary>
    public static bool IsSelfOrDescendant(string path, string ancestor)
    {
        if (ancestor == "/")
        {
            return path.StartsWith('/');
        }

        return path.Length == ancestor.Length
            ? path == ancestor
            : path.Length > ancestor.Length && path[ancestor.Length] == '/' && path.StartsWith(ancestor, StringComparison.Ordinal);
    }

    /// <summary>The parent of an absolute path other than the root.</summary>
    public static string Parent(string path)
    {
        int slash = path.LastIndexOf('/');
        return slash <= 0 ? "/" : path[..slash];
    }

    public static string Combine(string parent, string child) => parent == "/" ? "/" + child : parent + "/" + child;
}
