using System.Runtime.CompilerServices;

namespace XenPvUsb.Rings;

/// <summary>The memory operations both ends of a ring do on the shared page: slots, and publishing a producer index.</summary>
internal static unsafe class SharedRingPage
{
    public static byte* Slot(byte* page, uint index, uint size, int entrySize) =>
        page + RingIndex.HeaderSize + ((index & (size - 1)) * (uint)entrySize);

    /// <summary>
    /// RING_PUSH_*_AND_CHECK_NOTIFY: publish the producer index (after the entries, by the write
    /// barrier of Volatile.Write), full barrier, then notify if the other end's event index was passed.
    /// </summary>
    public static bool Push(byte* page, int prodOffset, int eventOffset, uint newProd)
    {
        uint* prod = (uint*)(page + prodOffset);
        uint old = Volatile.Read(ref *prod);
        Volatile.Write(ref *prod, newProd);
        Interlocked.MemoryBarrier();
        uint evt = Volatile.Read(ref *(uint*)(page + eventOffset));
        return RingIndex.NeedsNotify(old, newProd, evt);
    }

    public static T Read<T>(byte* slot)
        where T : unmanaged => Unsafe.ReadUnaligned<T>(slot);

    public static void Write<T>(byte* slot, in T value)
        where T : unmanaged => Unsafe.WriteUnaligned(slot, value);
}
