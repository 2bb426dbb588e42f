namespace XenPvUsb.Xen;

/// <summary>
/// One interdomain event channel bound for a backend (a libxenevtchn handle with one port in real
/// mode). Its file descriptor becomes readable when the other end notifies.
/// </summary>
public interface IEventChannel : IDisposable
{
    /// <summary>Pollable fd: readable when an event is pending.</summary>
    int Fd { get; }

    EvtchnPort LocalPort { get; }

    /// <summary>Consumes pending events (xenevtchn_pending) and unmasks the port (xenevtchn_unmask). Returns true if any was pending.</summary>
    bool ConsumePending();

    /// <summary>xenevtchn_notify.</summary>
    void Notify();
}

/// <summary>Binds event channels (xenevtchn_open + bind_interdomain in real mode).</summary>
public interface IEventChannelFactory
{
    /// <summary>Binds to a port the remote domain allocated for us. Throws <see cref="EventChannelException"/>.</summary>
    IEventChannel BindInterdomain(DomId remoteDomain, EvtchnPort remotePort);
}

public sealed class EventChannelException : Exception
{
    public EventChannelException(string message, int errno) : base(message)
    {
        Errno = errno;
    }

    public int Errno { get; }
}
