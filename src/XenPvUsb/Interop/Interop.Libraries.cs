using System.Reflection;
using System.Runtime.InteropServices;

namespace XenPvUsb.Interop;

internal static partial class Libraries
{
    /// <summary>The native shim over libxengnttab/libxenevtchn (native/). Installed next to the binaries.</summary>
    public const string Shim = "libxenpvusb-shim.so.1";

    private static int s_resolverSet;

    /// <summary>
    /// Loads the shim from the one place it is installed: the directory of the executable. Called only
    /// in real mode, so the simulator and the tests run on machines without Xen's libraries.
    /// </summary>
    public static void UseShimBesideExecutable()
    {
        if (Interlocked.Exchange(ref s_resolverSet, 1) == 0)
        {
            NativeLibrary.SetDllImportResolver(typeof(Libraries).Assembly, Resolve);
        }
    }

    private static nint Resolve(string name, Assembly assembly, DllImportSearchPath? searchPath)
    {
        if (name != Shim)
        {
            return 0;
        }
        string path = Path.Combine(AppContext.BaseDirectory, Shim);
        return NativeLibrary.Load(File.Exists(path) ? path : Shim);
    }
}
