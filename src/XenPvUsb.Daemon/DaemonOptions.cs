namespace XenPvUsb.Daemon;

/// <summary>Command line of xenpvusbd.</summary>
internal sealed record DaemonOptions(bool Simulate, bool Demo, string? RunDirectory, string? Image, string? Cli, bool Verbose)
{
    public static DaemonOptions Parse(string[] args)
    {
        bool simulate = false, demo = false, verbose = false;
        string? runDir = null, image = null, cli = null;
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--simulate":
                    simulate = true;
                    break;
                case "--demo":
                    demo = true;
                    simulate = true;
                    break;
                case "-v" or "--verbose":
                    verbose = true;
                    break;
                case "--run-dir" when i + 1 < args.Length:
                    runDir = args[++i];
                    break;
                case "--image" when i + 1 < args.Length:
                    image = args[++i];
                    break;
                case "--cli" when i + 1 < args.Length:
                    cli = args[++i];
                    break;
                case "-h" or "--help":
                    throw new UsageException();
                default:
                    throw new UsageException($"unknown argument '{args[i]}'");
            }
        }
        return new DaemonOptions(simulate, demo, runDir, image, cli, verbose);
    }

    public const string Usage = """
        usage: xenpvusbd [--simulate [--run-dir DIR]] [--demo [--image FILE] [--cli PATH]] [-v]

          (no option)   serve backend/vusb on this Xen dom0
          --simulate    serve a built-in simulated Xen host instead (xenstored socket in --run-dir)
          --demo        simulated host plus a guest: attach an emulated stick and keyboard with the
                        CLI, let the guest use them, and exit
          -v            debug logging
        """;
}

internal sealed class UsageException : Exception
{
    public UsageException(string? message = null) : base(message)
    {
    }
}
