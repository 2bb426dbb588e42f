using System.Diagnostics;

namespace XenPvUsb.Tests.Packaging;

/// <summary>
/// packaging/bash-completion/test-completion.sh (the completion against the real CLI on the simulated host, with the
/// binaries this build made), run by make test: its checks must all pass.
/// </summary>
[TestFixture]
[NonParallelizable]
public sealed class BashCompletionTests
{
    [Test]
    public async Task Completion_OfVerbsDomainsControllersPortsAndBusIds()
    {
        string script = XenPvUsb.Tests.Support.RepoFile.Find(Path.Combine("packaging", "bash-completion", "test-completion.sh"));
        var psi = new ProcessStartInfo("/bin/bash") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add(script);
        psi.ArgumentList.Add(AppContext.BaseDirectory);
        using Process p = Process.Start(psi)!;
        Task<string> output = p.StandardOutput.ReadToEndAsync();
        Task<string> error = p.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        await p.WaitForExitAsync(cts.Token);
        string all = await output + await error;
        Assert.That(p.ExitCode, Is.Zero, all);
        Assert.That(all, Does.Match(@"\n[1-9][0-9]* passed, 0 failed\n?$"), all);
    }
}
