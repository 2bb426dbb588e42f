namespace XenPvUsb.Tests.Support;

/// <summary>Files of the repository itself (packaging/...), found above the test binaries.</summary>
internal static class RepoFile
{
    /// <summary>The path of <paramref name="relative"/> in the checkout the tests were built from; fails the test if absent.</summary>
    public static string Find(string relative)
    {
        for (DirectoryInfo? d = new(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            string candidate = Path.Combine(d.FullName, relative);
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }
        Assert.Fail($"{relative} not found above {AppContext.BaseDirectory}");
        return "";
    }
}
