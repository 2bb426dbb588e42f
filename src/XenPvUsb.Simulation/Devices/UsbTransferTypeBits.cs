namespace XenPvUsb.Simulation.Devices;

/// <summary>Endpoint descriptor bmAttributes transfer type (bits 1:0); note it differs from usbfs's URB type numbering.</summary>
public enum UsbTransferTypeBits : byte
{
    Control = 0,
    Isochronous = 1,
    Bulk = 2,
    Interrupt = 3,
}
