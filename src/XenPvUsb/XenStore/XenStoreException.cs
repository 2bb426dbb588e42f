namespace XenPvUsb.XenStore;

/// <summary>xenstored (or the local request checks) answered a request with an error.</summary>
public sealed class XenStoreException : Exception
{
    internal XenStoreException(string operation, string errorName, string? path)
        : base(path is null ? $"xenstore {operation} failed: {errorName}" : $"xenstore {operation} '{path}' failed: {errorName}")
    {
        Operation = operation;
        ErrorName = errorName;
        Errno = XsErrorTable.ToErrno(errorName);
        Path = path;
    }

    /// <summary>The errno name as it travels on the wire, e.g. <c>ENOENT</c>.</summary>
    public string ErrorName { get; }

    /// <summary>The Linux errno number for <see cref="ErrorName"/>.</summary>
    public int Errno { get; }

    public string? Path { get; }

    /// <summary>The request type, e.g. <c>READ</c>.</summary>
    public string Operation { get; }
}
