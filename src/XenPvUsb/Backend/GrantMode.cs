namespace XenPvUsb.Backend;

/// <summary>How URB data moves between the guest's granted pages and the device (issue 4, item 4).</summary>
public enum GrantMode
{
    /// <summary>Grant copy (one hypercall per URB) into the backend's own buffer, which the device uses.</summary>
    Copy,

    /// <summary>
    /// Bulk and interrupt data pages are grant-mapped for the URB's lifetime and handed to the device in
    /// place; control transfers (whose SETUP packet must precede the data) and URBs whose pages are not
    /// one contiguous buffer still use grant copy.
    /// </summary>
    Map,
}

/// <summary>Text form of <see cref="GrantMode"/> as written in xenstore (backend node grant-mode) and on command lines.</summary>
public static class GrantModes
{
    public static string ToText(GrantMode mode) => mode == GrantMode.Map ? "map" : "copy";

    public static bool TryParse(string? text, out GrantMode mode)
    {
        switch (text)
        {
            case "copy":
                mode = GrantMode.Copy;
                return true;
            case "map":
                mode = GrantMode.Map;
                return true;
            default:
                mode = GrantMode.Copy;
                return false;
        }
    }
}
