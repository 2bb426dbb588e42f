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
        _controllerLoops = [loop];
        _controllersOnLoop = [0];
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

    /// <summary>The loop of xenstore's and the host's own work (hotplug, resyncs); the first of <see cref="ControllerLoops"/>.</summary>
    public EventLoop Loop { get; }

    private EventLoop[] _controllerLoops;
    private int[] _controllersOnLoop;
    private readonly Lock _loopLock = new();

    /// <summary>
    /// The loops controllers are sharded over (default: only <see cref="Loop"/>). Each controller, with its rings, event
    /// channel and devices, lives on one of them, so controllers on different loops run on different cores.
    /// </summary>
    public IReadOnlyList<EventLoop> ControllerLoops
    {
        get => _controllerLoops;
        set
        {
            ArgumentOutOfRangeException.ThrowIfZero(value.Count);
            _controllerLoops = [.. value];
            _controllersOnLoop = new int[value.Count];
        }
    }

    /// <summary>The loop with the fewest controllers, for a new one (give it back with <see cref="ReleaseControllerLoop"/>).</summary>
    public EventLoop AcquireControllerLoop()
    {
        lock (_loopLock)
        {
            int best = 0;
            for (int i = 1; i < _controllersOnLoop.Length; i++)
            {
                if (_controllersOnLoop[i] < _controllersOnLoop[best])
                {
                    best = i;
                }
            }
            _controllersOnLoop[best]++;
            return _controllerLoops[best];
        }
    }

    public void ReleaseControllerLoop(EventLoop loop)
    {
        lock (_loopLock)
        {
            int i = Array.IndexOf(_controllerLoops, loop);
            if (i >= 0 && _controllersOnLoop[i] > 0)
            {
                _controllersOnLoop[i]--;
            }
        }
    }

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
