namespace XenPvUsb.Xen;

/// <summary>xen/include/public/io/xenbus.h enum xenbus_state; values are the xenstore "state" numbers.</summary>
public enum XenbusState
{
    Unknown = 0,
    Initialising = 1,
    InitWait = 2,
    Initialised = 3,
    Connected = 4,
    Closing = 5,
    Closed = 6,
    Reconfiguring = 7,
    Reconfigured = 8,
}
