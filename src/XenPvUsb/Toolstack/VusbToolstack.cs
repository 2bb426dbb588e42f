using System.Globalization;
using XenPvUsb.Backend;
using XenPvUsb.Host;
using XenPvUsb.Usb;
using XenPvUsb.Xen;
using XenPvUsb.XenStore;

namespace XenPvUsb.Toolstack;

/// <summary>
/// The toolstack's half of PVUSB, as libxl does it for usbctrl type "pv": it only writes xenstore
/// nodes (with libxl's permissions) and waits for the backend's answer; xenpvusbd does the rest.
/// Used by the CLI and by the simulated host's demo.
/// </summary>
public sealed class VusbToolstack
{
    /// <summary>libxl's LIBXL_INIT_TIMEOUT / LIBXL_DESTROY_TIMEOUT.</summary>
    public static readonly TimeSpan BackendTimeout = TimeSpan.FromSeconds(10);

    private readonly XenStoreConnection _xs;
    private readonly string _sysfsRoot;
    private readonly DomId _backend;

    public VusbToolstack(XenStoreConnection xs, string sysfsRoot = "/sys", DomId? backendDomain = null)
    {
        _xs = xs;
        _sysfsRoot = sysfsRoot;
        _backend = backendDomain ?? DomId.Dom0;
    }

    /// <summary>The USB policy attaches must pass (null: none; the CLI sets the file's).</summary>
    public UsbPolicy? Policy { get; set; }

    private string BackendRoot => $"/local/domain/{_backend.Value}/backend/vusb";

    /// <summary>A domain by id or by name (the /local/domain/N/name node).</summary>
    public async Task<DomId> ResolveDomainAsync(string domain, CancellationToken cancellationToken = default)
    {
        if (ushort.TryParse(domain, NumberStyles.None, CultureInfo.InvariantCulture, out ushort id))
        {
            if (await _xs.ReadAsync($"/local/domain/{id}", cancellationToken: cancellationToken).ConfigureAwait(false) is null)
            {
                throw new ToolstackException($"domain {id} does not exist");
            }
            return new DomId(id);
        }
        foreach (string d in await _xs.DirectoryAsync("/local/domain", cancellationToken: cancellationToken).ConfigureAwait(false))
        {
            string? name = await _xs.ReadAsync($"/local/domain/{d}/name", cancellationToken: cancellationToken).ConfigureAwait(false);
            if (name == domain && ushort.TryParse(d, NumberStyles.None, CultureInfo.InvariantCulture, out id))
            {
                return new DomId(id);
            }
        }
        throw new ToolstackException($"unknown domain '{domain}'");
    }

    /// <summary>usb-hc-create / usbctrl-attach: writes a controller and waits for the backend to reach InitWait.</summary>
    /// <param name="grantMode">Written as the backend's grant-mode node; null leaves the choice to the daemon.</param>
    /// <param name="mergeBulkIn">False writes merge-bulk-in = 0: every bulk IN request gets its own device transfer.</param>
    public async Task<int> CreateControllerAsync(DomId domain, int usbVersion, int ports, bool waitForBackend = true, GrantMode? grantMode = null,
        bool mergeBulkIn = true, CancellationToken cancellationToken = default)
    {
        if (usbVersion is not (1 or 2))
        {
            throw new ToolstackException($"USB version must be 1 or 2, not {usbVersion}");
        }
        if (ports is < 1 or > Usbif.Usbif.USBIF_MAX_PORTNR)
        {
            throw new ToolstackException($"number of ports must be 1 to {Usbif.Usbif.USBIF_MAX_PORTNR}, not {ports}");
        }
        if (domain == _backend)
        {
            throw new ToolstackException("cannot give a virtual USB controller to the backend domain itself");
        }
        int devId = await _xs.TransactAsync(async tx =>
        {
            int next = 0;
            foreach (string d in await _xs.DirectoryAsync($"/local/domain/{domain.Value}/device/vusb", tx, cancellationToken).ConfigureAwait(false))
            {
                next = Math.Max(next, ParseInt(d) + 1);
            }
            foreach (string d in await _xs.DirectoryAsync($"{BackendRoot}/{domain.Value}", tx, cancellationToken).ConfigureAwait(false))
            {
                next = Math.Max(next, ParseInt(d) + 1);
            }
            string be = $"{BackendRoot}/{domain.Value}/{next}";
            string fe = $"/local/domain/{domain.Value}/device/vusb/{next}";
            // libxl__device_generic_add: backend owned by the backend domain, readable by the guest;
            // frontend owned by the guest, readable by the backend.
            XsPermission[] bePerms = [new(XsAccess.None, _backend), new(XsAccess.Read, domain)];
            XsPermission[] fePerms = [new(XsAccess.None, domain), new(XsAccess.Read, _backend)];
            await _xs.WriteAsync(be, "", tx, cancellationToken).ConfigureAwait(false);
            await _xs.SetPermissionsAsync(be, bePerms, tx, cancellationToken).ConfigureAwait(false);
            await _xs.WriteAsync($"{be}/frontend", fe, tx, cancellationToken).ConfigureAwait(false);
            await _xs.WriteAsync($"{be}/frontend-id", domain.ToString(), tx, cancellationToken).ConfigureAwait(false);
            await _xs.WriteAsync($"{be}/online", "1", tx, cancellationToken).ConfigureAwait(false);
            await _xs.WriteAsync($"{be}/state", "1", tx, cancellationToken).ConfigureAwait(false);
            await _xs.WriteAsync($"{be}/type", "pv", tx, cancellationToken).ConfigureAwait(false);
            await _xs.WriteAsync($"{be}/usb-ver", usbVersion.ToString(CultureInfo.InvariantCulture), tx, cancellationToken).ConfigureAwait(false);
            await _xs.WriteAsync($"{be}/num-ports", ports.ToString(CultureInfo.InvariantCulture), tx, cancellationToken).ConfigureAwait(false);
            if (grantMode is { } mode)
            {
                await _xs.WriteAsync($"{be}/grant-mode", GrantModes.ToText(mode), tx, cancellationToken).ConfigureAwait(false);
            }
            if (!mergeBulkIn)
            {
                await _xs.WriteAsync($"{be}/merge-bulk-in", "0", tx, cancellationToken).ConfigureAwait(false);
            }
            await _xs.WriteAsync($"{be}/port", "", tx, cancellationToken).ConfigureAwait(false);
            for (int p = 1; p <= ports; p++)
            {
                await _xs.WriteAsync($"{be}/port/{p}", "", tx, cancellationToken).ConfigureAwait(false);
            }
            await _xs.WriteAsync(fe, "", tx, cancellationToken).ConfigureAwait(false);
            await _xs.SetPermissionsAsync(fe, fePerms, tx, cancellationToken).ConfigureAwait(false);
            await _xs.WriteAsync($"{fe}/backend", be, tx, cancellationToken).ConfigureAwait(false);
            await _xs.WriteAsync($"{fe}/backend-id", _backend.ToString(), tx, cancellationToken).ConfigureAwait(false);
            await _xs.WriteAsync($"{fe}/state", "1", tx, cancellationToken).ConfigureAwait(false);
            return next;
        }, cancellationToken).ConfigureAwait(false);

        if (waitForBackend)
        {
            string be = $"{BackendRoot}/{domain.Value}/{devId}";
            if (!await WaitForStateAsync($"{be}/state", s => s != 1, BackendTimeout, cancellationToken).ConfigureAwait(false))
            {
                await RemoveControllerNodesAsync(domain, devId, cancellationToken).ConfigureAwait(false);
                throw new ToolstackException($"the backend did not answer within {BackendTimeout.TotalSeconds:0} s (is xenpvusbd running?); controller removed");
            }
        }
        return devId;
    }

    /// <summary>usb-hc-destroy / usbctrl-detach: asks the backend to close, waits for Closed, removes the nodes.</summary>
    public async Task<bool> DestroyControllerAsync(DomId domain, int devId, CancellationToken cancellationToken = default)
    {
        string be = await RequireControllerAsync(domain, devId, cancellationToken).ConfigureAwait(false);
        await _xs.TransactAsync(async tx =>
        {
            await _xs.WriteAsync($"{be}/online", "0", tx, cancellationToken).ConfigureAwait(false);
            await _xs.WriteAsync($"{be}/state", "5", tx, cancellationToken).ConfigureAwait(false);
        }, cancellationToken).ConfigureAwait(false);
        bool closed = await WaitForStateAsync($"{be}/state", s => s == 6, BackendTimeout, cancellationToken).ConfigureAwait(false);
        await RemoveControllerNodesAsync(domain, devId, cancellationToken).ConfigureAwait(false);
        return closed;
    }

    /// <summary>usb-attach: writes the bus id into port/N after checking the device, the port and other assignments.</summary>
    public async Task AttachAsync(DomId domain, int devId, int port, string busId, CancellationToken cancellationToken = default)
    {
        if (!UsbSysfs.IsValidBusId(busId) || busId.StartsWith("usb", StringComparison.Ordinal))
        {
            throw new ToolstackException($"'{busId}' is not a USB device bus id (like 1-2 or 3-1.4)");
        }
        UsbDeviceInfo info = UsbSysfs.Read(_sysfsRoot, busId) ?? throw new ToolstackException($"no USB device at bus id {busId}");
        if (info.IsHub)
        {
            throw new ToolstackException($"{busId} is a hub; hubs cannot be passed through");
        }
        if (Policy is { } policy)
        {
            byte[] descriptors;
            try
            {
                descriptors = UsbSysfs.ReadDescriptors(_sysfsRoot, busId);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                descriptors = [];
            }
            if (policy.Evaluate(info, UsbPolicy.Interfaces(descriptors)) is { Allowed: false } verdict)
            {
                throw new ToolstackException($"{busId} ({info.VendorId:x4}:{info.ProductId:x4}) is {verdict.Reason}");
            }
        }
        string be = await RequireControllerAsync(domain, devId, cancellationToken).ConfigureAwait(false);
        await _xs.TransactAsync(async tx =>
        {
            int numPorts = ParseInt(await _xs.ReadAsync($"{be}/num-ports", tx, cancellationToken).ConfigureAwait(false));
            if (port < 1 || port > numPorts)
            {
                throw new ToolstackException($"port must be 1 to {numPorts} on controller {devId}");
            }
            (DomId Dom, int Dev, int Port)? owner = await FindAssignmentAsync(busId, tx, cancellationToken).ConfigureAwait(false);
            if (owner is { } o)
            {
                throw new ToolstackException($"{busId} is already attached to domain {o.Dom}, controller {o.Dev}, port {o.Port}");
            }
            string? current = await _xs.ReadAsync($"{be}/port/{port}", tx, cancellationToken).ConfigureAwait(false);
            if (!string.IsNullOrEmpty(current))
            {
                throw new ToolstackException($"port {port} of controller {devId} is occupied by {current}");
            }
            await _xs.WriteAsync($"{be}/port/{port}", busId, tx, cancellationToken).ConfigureAwait(false);
            // An old verdict on this port must not pass for the daemon's answer to this assignment.
            if (await _xs.ReadAsync($"{be}/{PortStatus.Directory}", tx, cancellationToken).ConfigureAwait(false) is not null)
            {
                await _xs.RemoveAsync($"{be}/{PortStatus.Directory}/{port}", tx, cancellationToken).ConfigureAwait(false);
            }
        }, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// The daemon's verdict on port <paramref name="port"/>'s assignment of <paramref name="busId"/>
    /// (port-status/N): attached, waiting for the device, or refused (the daemon emptied the port then).
    /// Null if no verdict came within <paramref name="timeout"/> (no daemon serves the controller).
    /// </summary>
    public async Task<PortStatus?> WaitForVerdictAsync(DomId domain, int devId, int port, string busId, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        string path = $"{BackendRoot}/{domain.Value}/{devId}/{PortStatus.Directory}/{port}";
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        cts.CancelAfter(timeout);
        try
        {
            await using XenStoreWatch watch = await _xs.WatchAsync(path, cts.Token).ConfigureAwait(false);
            while (true)
            {
                if (PortStatus.Parse(await _xs.ReadAsync(path, cancellationToken: cts.Token).ConfigureAwait(false)) is { } status && status.BusId == busId)
                {
                    return status;
                }
                await watch.Events.ReadAsync(cts.Token).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return null;
        }
    }

    /// <summary>usb-detach: clears port/N.</summary>
    public async Task DetachAsync(DomId domain, int devId, int port, CancellationToken cancellationToken = default)
    {
        string be = await RequireControllerAsync(domain, devId, cancellationToken).ConfigureAwait(false);
        await _xs.TransactAsync(async tx =>
        {
            int numPorts = ParseInt(await _xs.ReadAsync($"{be}/num-ports", tx, cancellationToken).ConfigureAwait(false));
            if (port < 1 || port > numPorts)
            {
                throw new ToolstackException($"port must be 1 to {numPorts} on controller {devId}");
            }
            if (string.IsNullOrEmpty(await _xs.ReadAsync($"{be}/port/{port}", tx, cancellationToken).ConfigureAwait(false)))
            {
                throw new ToolstackException($"nothing is attached to port {port} of controller {devId}");
            }
            await _xs.WriteAsync($"{be}/port/{port}", "", tx, cancellationToken).ConfigureAwait(false);
        }, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>usbdev-attach hostbus= hostaddr= [controller= [port=]]: picks a free port (and a controller if none is named).</summary>
    public async Task<(int DevId, int Port, string BusId)> AttachByAddressAsync(DomId domain, int hostBus, int hostAddr, int? devId, int? port, CancellationToken cancellationToken = default)
    {
        UsbDeviceInfo info = UsbSysfs.FindByAddress(_sysfsRoot, hostBus, hostAddr) ?? throw new ToolstackException($"no USB device at bus {hostBus} address {hostAddr}");
        if (port is not null && devId is null)
        {
            throw new ToolstackException("port= needs controller=");
        }
        IReadOnlyList<VusbControllerInfo> controllers = await ListAsync(domain, cancellationToken).ConfigureAwait(false);
        foreach (VusbControllerInfo c in controllers)
        {
            if (devId is not null && c.DevId != devId)
            {
                continue;
            }
            if (port is { } p)
            {
                await AttachAsync(domain, c.DevId, p, info.BusId, cancellationToken).ConfigureAwait(false);
                return (c.DevId, p, info.BusId);
            }
            for (int i = 1; i <= c.NumPorts; i++)
            {
                if (string.IsNullOrEmpty(c.Ports[i - 1]))
                {
                    await AttachAsync(domain, c.DevId, i, info.BusId, cancellationToken).ConfigureAwait(false);
                    return (c.DevId, i, info.BusId);
                }
            }
        }
        if (devId is not null)
        {
            throw new ToolstackException(controllers.Any(c => c.DevId == devId) ? $"controller {devId} has no free port" : $"domain {domain} has no controller {devId}");
        }
        int created = await CreateControllerAsync(domain, 2, 8, cancellationToken: cancellationToken).ConfigureAwait(false);
        await AttachAsync(domain, created, 1, info.BusId, cancellationToken).ConfigureAwait(false);
        return (created, 1, info.BusId);
    }

    public async Task<IReadOnlyList<VusbControllerInfo>> ListAsync(DomId domain, CancellationToken cancellationToken = default)
    {
        var list = new List<VusbControllerInfo>();
        IReadOnlyList<string> devs = await _xs.DirectoryAsync($"{BackendRoot}/{domain.Value}", cancellationToken: cancellationToken).ConfigureAwait(false);
        foreach (string d in devs.OrderBy(ParseInt))
        {
            string be = $"{BackendRoot}/{domain.Value}/{d}";
            int numPorts = ParseInt(await _xs.ReadAsync($"{be}/num-ports", cancellationToken: cancellationToken).ConfigureAwait(false));
            var ports = new List<string?>();
            for (int p = 1; p <= numPorts; p++)
            {
                ports.Add(await _xs.ReadAsync($"{be}/port/{p}", cancellationToken: cancellationToken).ConfigureAwait(false));
            }
            list.Add(new VusbControllerInfo(
                ParseInt(d),
                await _xs.ReadAsync($"{be}/type", cancellationToken: cancellationToken).ConfigureAwait(false) ?? "pv",
                _backend.Value,
                ParseInt(await _xs.ReadAsync($"/local/domain/{domain.Value}/device/vusb/{d}/state", cancellationToken: cancellationToken).ConfigureAwait(false)),
                ParseInt(await _xs.ReadAsync($"{be}/state", cancellationToken: cancellationToken).ConfigureAwait(false)),
                ParseInt(await _xs.ReadAsync($"{be}/usb-ver", cancellationToken: cancellationToken).ConfigureAwait(false)),
                numPorts,
                ports));
        }
        return list;
    }

    /// <summary>Host devices a guest may be given: not hubs, not root hubs, not assigned to any controller.</summary>
    public async Task<IReadOnlyList<UsbDeviceInfo>> ListAssignableAsync(CancellationToken cancellationToken = default)
    {
        HashSet<string> assigned = await AssignedBusIdsAsync(cancellationToken).ConfigureAwait(false);
        var result = new List<UsbDeviceInfo>();
        foreach (UsbDeviceInfo d in UsbSysfs.Enumerate(_sysfsRoot))
        {
            if (!d.IsHub && !d.IsRootHub && !assigned.Contains(d.BusId))
            {
                result.Add(d);
            }
        }
        return result;
    }

    /// <summary>Every bus id written into any controller's port/N.</summary>
    public async Task<HashSet<string>> AssignedBusIdsAsync(CancellationToken cancellationToken = default)
    {
        var set = new HashSet<string>(StringComparer.Ordinal);
        foreach (string dom in await _xs.DirectoryAsync(BackendRoot, cancellationToken: cancellationToken).ConfigureAwait(false))
        {
            foreach (string dev in await _xs.DirectoryAsync($"{BackendRoot}/{dom}", cancellationToken: cancellationToken).ConfigureAwait(false))
            {
                foreach (string p in await _xs.DirectoryAsync($"{BackendRoot}/{dom}/{dev}/port", cancellationToken: cancellationToken).ConfigureAwait(false))
                {
                    string? v = await _xs.ReadAsync($"{BackendRoot}/{dom}/{dev}/port/{p}", cancellationToken: cancellationToken).ConfigureAwait(false);
                    if (!string.IsNullOrEmpty(v))
                    {
                        set.Add(v);
                    }
                }
            }
        }
        return set;
    }

    private async Task<(DomId, int, int)?> FindAssignmentAsync(string busId, XenStoreTransaction tx, CancellationToken cancellationToken)
    {
        foreach (string dom in await _xs.DirectoryAsync(BackendRoot, tx, cancellationToken).ConfigureAwait(false))
        {
            foreach (string dev in await _xs.DirectoryAsync($"{BackendRoot}/{dom}", tx, cancellationToken).ConfigureAwait(false))
            {
                foreach (string p in await _xs.DirectoryAsync($"{BackendRoot}/{dom}/{dev}/port", tx, cancellationToken).ConfigureAwait(false))
                {
                    if (await _xs.ReadAsync($"{BackendRoot}/{dom}/{dev}/port/{p}", tx, cancellationToken).ConfigureAwait(false) == busId)
                    {
                        return (new DomId((ushort)ParseInt(dom)), ParseInt(dev), ParseInt(p));
                    }
                }
            }
        }
        return null;
    }

    private async Task<string> RequireControllerAsync(DomId domain, int devId, CancellationToken cancellationToken)
    {
        string be = $"{BackendRoot}/{domain.Value}/{devId}";
        if (await _xs.ReadAsync(be, cancellationToken: cancellationToken).ConfigureAwait(false) is null)
        {
            throw new ToolstackException($"domain {domain} has no virtual USB controller {devId}");
        }
        return be;
    }

    private async Task RemoveControllerNodesAsync(DomId domain, int devId, CancellationToken cancellationToken)
    {
        string backendParent = $"{BackendRoot}/{domain.Value}";
        string frontendParent = $"/local/domain/{domain.Value}/device/vusb";
        await _xs.TransactAsync(async tx =>
        {
            await _xs.RemoveAsync($"{backendParent}/{devId}", tx, cancellationToken).ConfigureAwait(false);
            await _xs.RemoveAsync($"{frontendParent}/{devId}", tx, cancellationToken).ConfigureAwait(false);
            // The last controller takes its domain's directories with it, as libxl's path cleanup does: an empty
            // backend/vusb/<domid> would otherwise outlive the domain (nothing else removes it).
            foreach (string parent in new[] { backendParent, frontendParent })
            {
                if ((await _xs.DirectoryAsync(parent, tx, cancellationToken).ConfigureAwait(false)).Count == 0)
                {
                    try
                    {
                        await _xs.RemoveAsync(parent, tx, cancellationToken).ConfigureAwait(false);
                    }
                    catch (XenStoreException e) when (e.ErrorName == "ENOENT")
                    {
                        // never there (a frontend that wrote nothing): nothing to clean up
                    }
                }
            }
        }, cancellationToken).ConfigureAwait(false);
    }

    private async Task<bool> WaitForStateAsync(string path, Func<int, bool> done, TimeSpan timeout, CancellationToken cancellationToken)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        cts.CancelAfter(timeout);
        await using XenStoreWatch watch = await _xs.WatchAsync(path, cancellationToken).ConfigureAwait(false);
        try
        {
            while (true)
            {
                await watch.Events.ReadAsync(cts.Token).ConfigureAwait(false);
                if (done(ParseInt(await _xs.ReadAsync(path, cancellationToken: cancellationToken).ConfigureAwait(false))))
                {
                    return true;
                }
            }
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return false;
        }
    }

    private static int ParseInt(string? s) => int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out int v) ? v : -1;
}
