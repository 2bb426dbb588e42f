using XenPvUsb.Interop.Linux;
using XenPvUsb.Xen;

namespace XenPvUsb.Simulation.Xen;

/// <summary>
/// Event channels of a simulated host. A guest allocates an unbound port for a remote domain
/// (EVTCHNOP_alloc_unbound); the backend binds to it (bind_interdomain). Each end is an eventfd, so
/// the backend's real epoll loop waits on it exactly as on /dev/xen/evtchn.
/// </summary>
public sealed class SimulatedEventChannels
{
    private readonly Lock _lock = new();
    private readonly Dictionary<(DomId, uint), GuestPort> _guestPorts = new();
    private uint _nextPort = 1;

    /// <summary>Allocates an unbound port in <paramref name="guest"/> that <paramref name="remote"/> may bind.</summary>
    public GuestPort AllocUnbound(DomId guest, DomId remote)
    {
        lock (_lock)
        {
            var port = new GuestPort(this, guest, remote, new EvtchnPort(_nextPort++));
            _guestPorts.Add((guest, port.Port.Value), port);
            return port;
        }
    }

    /// <summary>What a backend domain gets from xenevtchn_open.</summary>
    public IEventChannelFactory OpenAs(DomId self) => new Factory(this, self);

    internal void Close(GuestPort port)
    {
        lock (_lock)
        {
            _guestPorts.Remove((port.Domain, port.Port.Value));
        }
    }

    /// <summary>Domain death: the guest's ports close; bound backends see no more events.</summary>
    public void DestroyDomain(DomId guest)
    {
        List<GuestPort> dead = new();
        lock (_lock)
        {
            foreach (KeyValuePair<(DomId, uint), GuestPort> kv in _guestPorts)
            {
                if (kv.Key.Item1 == guest)
                {
                    dead.Add(kv.Value);
                }
            }
        }
        foreach (GuestPort p in dead)
        {
            p.Dispose();
        }
    }

    private sealed class Factory : IEventChannelFactory
    {
        private readonly SimulatedEventChannels _owner;
        private readonly DomId _self;

        public Factory(SimulatedEventChannels owner, DomId self)
        {
            _owner = owner;
            _self = self;
        }

        public IEventChannel BindInterdomain(DomId remoteDomain, EvtchnPort remotePort)
        {
            lock (_owner._lock)
            {
                if (!_owner._guestPorts.TryGetValue((remoteDomain, remotePort.Value), out GuestPort? port) || port.Remote != _self)
                {
                    throw new EventChannelException($"bind_interdomain(dom{remoteDomain}, port {remotePort}): no such unbound port", 22);
                }
                return port.Bind(new EvtchnPort(_owner._nextPort++));
            }
        }
    }
}

/// <summary>The guest's end of an interdomain event channel.</summary>
public sealed class GuestPort : IDisposable
{
    private readonly SimulatedEventChannels _owner;
    private readonly Lock _lock = new();
    private BackendPort? _bound;
    private int _fd;

    internal GuestPort(SimulatedEventChannels owner, DomId domain, DomId remote, EvtchnPort port)
    {
        _owner = owner;
        Domain = domain;
        Remote = remote;
        Port = port;
        _fd = EventFd.Create();
    }

    public DomId Domain { get; }

    public DomId Remote { get; }

    public EvtchnPort Port { get; }

    /// <summary>Readable when the backend notified.</summary>
    public int Fd => _fd;

    public bool IsBound
    {
        get
        {
            lock (_lock)
            {
                return _bound is not null;
            }
        }
    }

    /// <summary>notify_remote_via_evtchn.</summary>
    public void Notify()
    {
        BackendPort? b;
        lock (_lock)
        {
            b = _bound;
        }
        b?.Raise();
    }

    public bool ConsumePending() => EventFd.Drain(_fd);

    /// <summary>Raises the guest's own event (used to wake a guest thread that waits on <see cref="Fd"/>).</summary>
    public void Raise() => EventFd.Signal(_fd);

    public void Dispose()
    {
        BackendPort? b;
        lock (_lock)
        {
            b = _bound;
            _bound = null;
        }
        b?.PeerClosed();
        _owner.Close(this);
        int fd = Interlocked.Exchange(ref _fd, -1);
        EventFd.Close(fd);
    }

    internal BackendPort Bind(EvtchnPort local)
    {
        lock (_lock)
        {
            if (_bound is not null)
            {
                throw new EventChannelException($"port {Port} of dom{Domain} is already bound", 16);
            }
            _bound = new BackendPort(this, local);
            return _bound;
        }
    }

    internal void Unbind(BackendPort port)
    {
        lock (_lock)
        {
            if (_bound == port)
            {
                _bound = null;
            }
        }
    }

    internal sealed class BackendPort : IEventChannel
    {
        private GuestPort? _peer;
        private int _fd;

        public BackendPort(GuestPort peer, EvtchnPort local)
        {
            _peer = peer;
            LocalPort = local;
            _fd = EventFd.Create();
        }

        public int Fd => _fd;

        public EvtchnPort LocalPort { get; }

        public bool ConsumePending() => EventFd.Drain(_fd);

        public void Notify()
        {
            GuestPort? peer = Volatile.Read(ref _peer);
            if (peer is not null && peer._fd >= 0)
            {
                EventFd.Signal(peer._fd);
            }
        }

        public void Dispose()
        {
            Interlocked.Exchange(ref _peer, null)?.Unbind(this);
            EventFd.Close(Interlocked.Exchange(ref _fd, -1));
        }

        internal void Raise()
        {
            int fd = _fd;
            if (fd >= 0)
            {
                EventFd.Signal(fd);
            }
        }

        internal void PeerClosed() => Volatile.Write(ref _peer, null);
    }
}
