namespace XenPvUsb.Simulation.XenStore;

/// <summary>A request fails with a xenstore errno name; the dispatcher turns it into an ERROR reply.</summary>
internal sealed class SimXsError(string name) : Exception(name)
{
    public string Name { get; } = name;
}
