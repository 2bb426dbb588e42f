namespace XenPvUsb.Toolstack;

/// <summary>A toolstack request that cannot be done as asked; the message is for the administrator.</summary>
public sealed class ToolstackException : Exception
{
    public ToolstackException(string message) : base(message)
    {
    }
}
