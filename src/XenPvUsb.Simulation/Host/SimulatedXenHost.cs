using System.Globalization;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using XenPvUsb.Backend;
using XenPvUsb.Simulation.Devices;
using XenPvUsb.Simulation.Xen;
using XenPvUsb.Simulation.XenStore;
using XenPvUsb.Usb;
using XenPvUsb.Xen;
using XenPvUsb.XenStore;

namespace XenPvUsb.Simulation.Host;

/// <summary>
/// A whole simulated Xen host in one process: xenstored (on unix sockets, one per domain, so the
/// real client code runs), grant tables, event channels and a USB host with emulated devices that
/// mirrors itself into a sysfs-like tree. It also plays the toolstack's part in domain life
/// (what xl create / xl destroy do to xenstore).
/// </summary>
public sealed class SimulatedXenHost : IAsyncDisposable
{
    private static readonly string[] s_guestOwnedDirectories = ["device", "data", "control", "error"];

    private readonly ILoggerFactory _loggerFactory;
    private readonly List<SimulatedGuest> _guests = new();
    private XenStoreConnection? _toolstack;
    private ushort _nextDomId = 1;

    private SimulatedXenHost(string runDirectory, ILoggerFactory loggerFactory)
    {
        RunDirectory = runDirectory;
        _loggerFactory = loggerFactory;
        XenStored = new SimulatedXenStored(loggerFactory.CreateLogger("XenPvUsb.Simulation.XenStored"));
        SysfsRoot = Path.Combine(runDirectory, "sys");
        Usb = new EmulatedUsbHost(SysfsRoot);
        Dom0SocketPath = Path.Combine(runDirectory, "xenstored", "socket");
    }

    public string RunDirectory { get; }

    /// <summary>The dom0 xenstored socket; point XENSTORED_PATH at it to use the CLI against this host.</summary>
    public string Dom0SocketPath { get; }

    /// <summary>Root of the emulated sysfs; point XENPVUSB_SYSFS at it.</summary>
    public string SysfsRoot { get; }

    public SimulatedXenStored XenStored { get; }

    public SimulatedGrantTables Grants { get; } = new();

    public SimulatedEventChannels EventChannels { get; } = new();

    public EmulatedUsbHost Usb { get; }

    public static async Task<SimulatedXenHost> StartAsync(string runDirectory, ILoggerFactory? loggerFactory = null, CancellationToken cancellationToken = default)
    {
        Directory.CreateDirectory(Path.Combine(runDirectory, "xenstored"));
        var host = new SimulatedXenHost(runDirectory, loggerFactory ?? NullLoggerFactory.Instance);
        host.XenStored.Listen(DomId.Dom0, host.Dom0SocketPath);
        host._toolstack = await XenStoreConnection.ConnectAsync(host.Dom0SocketPath, cancellationToken: cancellationToken).ConfigureAwait(false);
        XenStoreConnection xs = host._toolstack;
        await xs.WriteAsync("/local/domain/0/name", "Domain-0", cancellationToken: cancellationToken).ConfigureAwait(false);
        await xs.WriteAsync("/local/domain/0/domid", "0", cancellationToken: cancellationToken).ConfigureAwait(false);
        host.XenStored.IntroduceDomain(DomId.Dom0);
        return host;
    }

    /// <summary>What a backend in dom0 is built from on this host.</summary>
    public BackendHost CreateBackendHost(XenStoreConnection dom0Store, EventLoop loop, ILoggerFactory? loggerFactory = null, IUsbHost? usb = null) =>
        new(dom0Store, Grants.OpenAs(DomId.Dom0), EventChannels.OpenAs(DomId.Dom0), usb ?? Usb, loop, loggerFactory ?? _loggerFactory, DomId.Dom0);

    /// <summary>xl create, as far as xenstore goes: the domain's directory, its xenstore connection, @introduceDomain.</summary>
    public async Task<SimulatedGuest> CreateGuestAsync(string name, CancellationToken cancellationToken = default)
    {
        var id = new DomId(_nextDomId++);
        XenStoreConnection xs = _toolstack!;
        string dom = $"/local/domain/{id.Value}";
        await xs.TransactAsync(async tx =>
        {
            await xs.WriteAsync(dom, "", tx, cancellationToken).ConfigureAwait(false);
            await xs.SetPermissionsAsync(dom, [new XsPermission(XsAccess.None, DomId.Dom0), new XsPermission(XsAccess.Read, id)], tx, cancellationToken).ConfigureAwait(false);
            await xs.WriteAsync($"{dom}/name", name, tx, cancellationToken).ConfigureAwait(false);
            await xs.WriteAsync($"{dom}/domid", id.Value.ToString(CultureInfo.InvariantCulture), tx, cancellationToken).ConfigureAwait(false);
            foreach (string sub in s_guestOwnedDirectories)
            {
                await xs.WriteAsync($"{dom}/{sub}", "", tx, cancellationToken).ConfigureAwait(false);
                await xs.SetPermissionsAsync($"{dom}/{sub}", [new XsPermission(XsAccess.None, id), new XsPermission(XsAccess.Read, DomId.Dom0)], tx, cancellationToken).ConfigureAwait(false);
            }
        }, cancellationToken).ConfigureAwait(false);
        string socket = Path.Combine(RunDirectory, "xenstored", $"domain-{id.Value}.socket");
        XenStored.Listen(id, socket);
        XenStored.IntroduceDomain(id);
        XenStoreConnection guestStore = await XenStoreConnection.ConnectAsync(socket, cancellationToken: cancellationToken).ConfigureAwait(false);
        var guest = new SimulatedGuest(this, id, name, guestStore, Grants.ForDomain(id), _loggerFactory.CreateLogger($"XenPvUsb.Simulation.Guest.{name}"));
        _guests.Add(guest);
        return guest;
    }

    /// <summary>
    /// xl destroy: the domain dies (@releaseDomain), its grants and event channels go, libxl removes the
    /// domain's directory and the backend nodes of the devices it has records of (/libxl/&lt;domid&gt;/device);
    /// controllers made by our own CLI have none, so their backend nodes stay for the backend to remove.
    /// </summary>
    public async Task DestroyGuestAsync(SimulatedGuest guest, CancellationToken cancellationToken = default)
    {
        if (!_guests.Remove(guest))
        {
            return;
        }
        await guest.DisposeAsync().ConfigureAwait(false);
        XenStored.ReleaseDomain(guest.Id);
        EventChannels.DestroyDomain(guest.Id);
        Grants.DestroyDomain(guest.Id);
        XenStoreConnection xs = _toolstack!;
        foreach (string dev in await xs.DirectoryAsync($"/libxl/{guest.Id.Value}/device/vusb", cancellationToken: cancellationToken).ConfigureAwait(false))
        {
            await xs.RemoveAsync($"/local/domain/0/backend/vusb/{guest.Id.Value}/{dev}", cancellationToken: cancellationToken).ConfigureAwait(false);
        }
        await xs.RemoveAsync($"/local/domain/{guest.Id.Value}", cancellationToken: cancellationToken).ConfigureAwait(false);
        if (await xs.ReadAsync($"/libxl/{guest.Id.Value}", cancellationToken: cancellationToken).ConfigureAwait(false) is not null)
        {
            await xs.RemoveAsync($"/libxl/{guest.Id.Value}", cancellationToken: cancellationToken).ConfigureAwait(false);
        }
    }

    public async ValueTask DisposeAsync()
    {
        foreach (SimulatedGuest g in _guests.ToArray())
        {
            await g.DisposeAsync().ConfigureAwait(false);
        }
        _guests.Clear();
        if (_toolstack is not null)
        {
            await _toolstack.DisposeAsync().ConfigureAwait(false);
        }
        await XenStored.DisposeAsync().ConfigureAwait(false);
    }
}
