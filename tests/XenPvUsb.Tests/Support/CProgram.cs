using System.Diagnostics;

namespace XenPvUsb.Tests.Support;

/// <summary>Compiles and runs a small C program against the system headers (gcc), returning its output lines as key=value.</summary>
internal static class CProgram
{
    public static Dictionary<string, long> Run(string source)
    {
        string dir = Path.Combine(Path.GetTempPath(), $"xenpvusb-abi-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            string c = Path.Combine(dir, "abi.c");
            string exe = Path.Combine(dir, "abi");
            File.WriteAllText(c, source);
            Exec("gcc", $"-std=gnu11 -Wall -Werror -o {exe} {c}");
            string output = Exec(exe, "");
            var result = new Dictionary<string, long>(StringComparer.Ordinal);
            foreach (string line in output.Split('\n', StringSplitOptions.RemoveEmptyEntries))
            {
                int eq = line.IndexOf('=', StringComparison.Ordinal);
                result[line[..eq]] = long.Parse(line[(eq + 1)..], System.Globalization.CultureInfo.InvariantCulture);
            }
            return result;
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static string Exec(string file, string args)
    {
        var psi = new ProcessStartInfo(file, args) { RedirectStandardOutput = true, RedirectStandardError = true };
        using Process p = Process.Start(psi)!;
        string stdout = p.StandardOutput.ReadToEnd();
        string stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0)
        {
            throw new InvalidOperationException($"{file} {args} failed ({p.ExitCode}): {stderr}");
        }
        return stdout;
    }
}
