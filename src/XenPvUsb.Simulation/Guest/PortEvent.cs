namespace XenPvUsb.Simulation.Guest;

/// <summary>A conn-ring event: a device appeared on a port (speed 1..3) or left it (speed 0).</summary>
public readonly record struct PortEvent(int Port, int Speed);
