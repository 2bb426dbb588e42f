namespace XenPvUsb.XenStore;

/// <summary>
/// The xenstore error table (xs_wire.h <c>xsd_errors</c>, in wire order): errors travel as the errno
/// <em>name</em>, the numbers are the Linux values.
/// </summary>
public static class XsErrorTable
{
    private static readonly (string Name, int Errno)[] s_errors =
    [
        ("EINVAL", 22),
        ("EACCES", 13),
        ("EEXIST", 17),
        ("EISDIR", 21),
        ("ENOENT", 2),
        ("ENOMEM", 12),
        ("ENOSPC", 28),
        ("EIO", 5),
        ("ENOTEMPTY", 39),
        ("ENOSYS", 38),
        ("EROFS", 30),
        ("EBUSY", 16),
        ("EAGAIN", 11),
        ("EISCONN", 106),
        ("E2BIG", 7),
        ("EPERM", 1),
    ];

    public static IEnumerable<string> Names
    {
        get
        {
            foreach ((string name, int _) in s_errors)
            {
                yield return name;
            }
        }
    }

    /// <summary>The errno for an error name; like xs.c, an unknown name maps to EINVAL.</summary>
    public static int ToErrno(string name)
    {
        foreach ((string n, int errno) in s_errors)
        {
            if (n == name)
            {
                return errno;
            }
        }

        return 22;
    }

    public static bool IsKnown(string name)
    {
        foreach ((string n, int _) in s_errors)
        {
            if (n == name)
            {
                return true;
            }
        }

        return false;
    }
}
