namespace XenPvUsb.Usb;

/// <summary>
/// A SuperSpeed device's descriptors at high speed (<see cref="HighSpeedView"/>), made once when it is put
/// on a port: what GET_DESCRIPTOR of the device, a configuration or the device qualifier answers.
/// </summary>
public sealed class HighSpeedDescriptorSet
{
    private readonly byte[] _device;
    private readonly byte[] _qualifier;
    private readonly byte[][] _configurations;

    private HighSpeedDescriptorSet(byte[] device, byte[][] configurations)
    {
        _device = device;
        _qualifier = HighSpeedView.DeviceQualifier(device);
        _configurations = configurations;
    }

    public int ConfigurationCount => _configurations.Length;

    /// <summary>
    /// From the host's descriptors (<see cref="IUsbHostDevice.Descriptors"/>); null if the device
    /// descriptor or any configuration it announces does not parse.
    /// </summary>
    public static HighSpeedDescriptorSet? Create(ReadOnlySpan<byte> descriptors)
    {
        if (HighSpeedView.Device(descriptors) is not { } device)
        {
            return null;
        }
        byte[][] configurations = new byte[device[17]][];
        for (int i = 0; i < configurations.Length; i++)
        {
            if (HighSpeedView.Configuration(HighSpeedView.FindConfiguration(descriptors, i)) is not { } c)
            {
                return null;
            }
            configurations[i] = c;
        }
        return new HighSpeedDescriptorSet(device, configurations);
    }

    /// <summary>
    /// The descriptor GET_DESCRIPTOR(<paramref name="wValue"/>) asks for, if it is one of ours (the
    /// device, configuration n, the device qualifier); null for the others (strings, class descriptors,
    /// a configuration the device does not have), which go to the device.
    /// </summary>
    public byte[]? Find(ushort wValue)
    {
        int index = wValue & 0xff;
        return (wValue >> 8) switch
        {
            HighSpeedView.DeviceType when index == 0 => _device,
            HighSpeedView.ConfigurationType when index < _configurations.Length => _configurations[index],
            HighSpeedView.DeviceQualifierType when index == 0 => _qualifier,
            _ => null,
        };
    }
}
