using Tmds.Linux;

namespace XenPvUsb.XenStore;

internal static unsafe class XsTransportProbe
{
    /// <summary>True for a unix socket (S_ISSOCK), false for anything else that exists, null if the path is absent.</summary>
    public static bool? IsSocket(string path)
    {
        byte[] pathBytes = System.Text.Encoding.UTF8.GetBytes(path + "\0");
        stat st;
        int rv;
        fixed (byte* p = pathBytes)
        {
            rv = LibC.stat(p, &st);
        }

        if (rv != 0)
        {
            return null;
        }

        return (st.st_mode & LibC.S_IFMT) == LibC.S_IFSOCK;
    }
}
