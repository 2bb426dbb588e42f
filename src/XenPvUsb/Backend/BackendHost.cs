using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using XenPvUsb.Logging;
using XenPvUsb.Usb;
using XenPvUsb.Xen;
using XenPvUsb.XenStore;

namespace XenPvUsb.Backend;

/// <summary>The seams a backend is built from: real Xen and usbfs, or the simulated host.</summary>
public sealed class BackendHost
{
    public BackendHost(XenStoreConnection store, IGrantTable grants, IEventChannelFactory eventChannels, IUsbHost usb, EventLoop loop,
        ILoggerFactory? loggerFactory = null, DomId? self = null)
    {
        Store = store;
        Grants = grants;
        EventChannels = eventChannels;
        Usb = usb;
        Loop = loop;
        LoggerFactory = loggerFactory ?? NullLoggerFactory.Instance;
        Self = self ?? DomId.Dom0;
        Audit = new LoggedAuditTrail(LoggerFactory.CreateLogger("XenPvUsb.Audit"));
    }

    /// <summary>Where attach, detach, plug, unplug and refusal records go (the daemon: the journal).</summary>
    public IAuditTrail Audit { get; set; }

    /// <summary>
    /// The persistent assignment rule (as a line of the file) that claims a device for a domain (by name), for the
    /// audit trail; null when no assignment service runs or no rule claims it.
    /// </summary>
    public Func<string?, UsbDeviceInfo, string?>? RuleFor { get; set; }

    public XenStoreConnection Store { get; }

    public IGrantTable Grants { get; }

    public IEventChannelFactory EventChannels { get; }

    public IUsbHost Usb { get; }

    public EventLoop Loop { get; }

    public ILoggerFactory LoggerFactory { get; }

    /// <summary>Data path of controllers whose backend directory has no grant-mode node.</summary>
    public GrantMode GrantMode { get; set; } = GrantMode.Copy;

    /// <summary>
    /// Where each connected controller keeps its recovery journal (the daemon's runtime directory,
    /// /run/xenpvusb), so that a restarted daemon re-adopts it; null: no journal, no re-adoption.
    /// </summary>
    public string? StateDirectory { get; set; }

    /// <summary>Cap on the usbfs memory each controller may have at devices at once (see VusbController.UsbfsBudget).</summary>
    public long UsbfsBudget { get; set; } = VusbController.DefaultUsbfsBudget;

    /// <summary>Where the host's sysfs is (the simulated host has its own tree).</summary>
    public string SysfsRoot { get; set; } = "/sys";

    /// <summary>The domain this backend runs in (dom0).</summary>
    public DomId Self { get; }
}
