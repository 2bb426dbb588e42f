namespace XenPvUsb.Toolstack;

/// <summary>A virtual host controller as xenstore describes it.</summary>
public sealed record VusbControllerInfo(int DevId, string Type, int BackendDomain, int FrontendState, int BackendState, int UsbVersion, int NumPorts, IReadOnlyList<string?> Ports);
