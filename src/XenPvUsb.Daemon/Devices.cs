using XenPvUsb.Simulation.Devices;
using XenPvUsb.Simulation.Host;

namespace XenPvUsb.Daemon;

/// <summary>The emulated devices the simulated host starts with.</summary>
internal static class Devices
{
    public const string StickBusId = "1-1";
    public const string KeyboardBusId = "1-2";
    public const string HubBusId = "1-3";
    public const string SuperSpeedStickBusId = "1-4";
    public const string AudioBusId = "1-5";
    public const long SuperSpeedStickBytes = 16L * 1024 * 1024;
    public const long DefaultStickBytes = 64L * 1024 * 1024;

    /// <summary>
    /// Plugs the stick (a generated image unless one is given), the keyboard, a hub, a USB 3 stick (its
    /// image next to the generated one) and a USB audio device (isochronous speaker and microphone).
    /// Returns the stick's image path.
    /// </summary>
    public static (string Image, MassStorageDevice Stick, HidKeyboardDevice Keyboard, UsbAudioDevice Audio) PlugDemoDevices(SimulatedXenHost sim, string generatedImage, string? image)
    {
        string path = image ?? generatedImage;
        if (image is null)
        {
            StickImage.Create(path, DefaultStickBytes, seed: 2026);
        }
        var stick = new MassStorageDevice(path, readOnly: image is not null);
        var keyboard = new HidKeyboardDevice();
        sim.Usb.Plug(StickBusId, stick);
        sim.Usb.Plug(KeyboardBusId, keyboard);
        sim.Usb.Plug(HubBusId, new EmulatedHub());
        string superSpeedImage = SuperSpeedImagePath(generatedImage);
        StickImage.Create(superSpeedImage, SuperSpeedStickBytes, seed: 3);
        sim.Usb.Plug(SuperSpeedStickBusId, new MassStorageDevice(superSpeedImage, readOnly: false, XenPvUsb.Usb.UsbSpeed.Super));
        var audio = new UsbAudioDevice();
        sim.Usb.Plug(AudioBusId, audio);
        return (path, stick, keyboard, audio);
    }

    public static string SuperSpeedImagePath(string generatedImage) => Path.Combine(Path.GetDirectoryName(generatedImage)!, "stick-usb3.img");
}
