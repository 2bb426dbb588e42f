namespace XenPvUsb.Simulation.XenStore;

/// <summary>A registered watch: the path as the client gave it, its absolute form, and the client's token.</summary>
internal sealed record SimWatch(string Path, string AbsolutePath, string Token)
{
    public bool IsRelative => !Path.StartsWith('/') && !Path.StartsWith('@');
}
