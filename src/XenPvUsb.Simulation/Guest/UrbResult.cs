namespace XenPvUsb.Simulation.Guest;

/// <summary>What the backend answered for one URB: a usbif status and the bytes moved.</summary>
public readonly record struct UrbResult(int Status, int ActualLength)
{
    public bool Ok => Status == 0;
}
