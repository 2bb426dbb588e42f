namespace XenPvUsb.Xen;

/// <summary>A mapped foreign page. Disposing unmaps it; the address must not be used afterwards.</summary>
public abstract class GrantMapping : IDisposable
{
    protected GrantMapping(nint address, int length)
    {
        Address = address;
        Length = length;
    }

    public nint Address { get; private set; }

    public int Length { get; }

    public void Dispose()
    {
        if (Address != 0)
        {
            Unmap(Address);
            Address = 0;
        }
        GC.SuppressFinalize(this);
    }

    protected abstract void Unmap(nint address);
}
