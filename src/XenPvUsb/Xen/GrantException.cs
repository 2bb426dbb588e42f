namespace XenPvUsb.Xen;

/// <summary>A grant could not be mapped or copied.</summary>
public sealed class GrantException : Exception
{
    public GrantException(string message, int status) : base(message)
    {
        Status = status;
    }

    /// <summary>GNTST_* or negative errno.</summary>
    public int Status { get; }
}
