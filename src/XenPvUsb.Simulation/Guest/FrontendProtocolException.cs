namespace XenPvUsb.Simulation.Guest;

/// <summary>The backend broke the protocol (xen-hcd's "protocol error" latch).</summary>
public sealed class FrontendProtocolException : Exception
{
    public FrontendProtocolException(string message) : base(message)
    {
    }
}
