using System.CommandLine;

namespace XenPvUsb.Cli;

internal static class Program
{
    private static Task<int> Main(string[] args) => CommandTable.Build().Parse(args).InvokeAsync();
}
