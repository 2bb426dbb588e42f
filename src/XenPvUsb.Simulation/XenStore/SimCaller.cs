using XenPvUsb.Xen;

namespace XenPvUsb.Simulation.XenStore;

/// <summary>Who a request acts as. dom0 is the privileged (control) domain.</summary>
internal readonly record struct SimCaller(DomId Domain)
{
    public bool Privileged => Domain.Value == 0;
}
