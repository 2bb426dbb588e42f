using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace XenPvUsb.Simulation.Devices;

/// <summary>
/// Deterministic pseudo-random disk images for the emulated stick. Content is counter-based (each
/// 8-byte word is a SplitMix64 hash of the seed and its offset), so any range can be regenerated
/// with <see cref="Fill"/> to check what a device returned without reading the file.
/// </summary>
public static class StickImage
{
    private const int ChunkSize = 1 << 20;
    private const ulong Golden = 0x9E3779B97F4A7C15UL;

    /// <summary>Creates (or overwrites) an image of <paramref name="sizeBytes"/> (a non-zero multiple of 512).</summary>
    public static void Create(string path, long sizeBytes, int seed)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (sizeBytes <= 0 || sizeBytes % MassStorageDevice.BlockSize != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(sizeBytes), sizeBytes, "Image size must be a non-zero multiple of 512.");
        }

        byte[] chunk = new byte[(int)Math.Min(ChunkSize, sizeBytes)];
        using SafeFileHandle file = File.OpenHandle(path, FileMode.Create, FileAccess.Write, FileShare.None, FileOptions.None, sizeBytes);
        for (long offset = 0; offset < sizeBytes; offset += chunk.Length)
        {
            Span<byte> span = chunk.AsSpan(0, (int)Math.Min(chunk.Length, sizeBytes - offset));
            Fill(span, offset, seed);
            RandomAccess.Write(file, span, offset);
        }
    }

    /// <summary>The image content at <paramref name="offset"/>; offset and length must be multiples of 8.</summary>
    public static void Fill(Span<byte> destination, long offset, int seed)
    {
        if (offset % 8 != 0 || destination.Length % 8 != 0)
        {
            throw new ArgumentException("Offset and length must be multiples of 8.");
        }

        Span<ulong> words = MemoryMarshal.Cast<byte, ulong>(destination);
        ulong state = ((ulong)(uint)seed * 0xD1B54A32D192ED03UL) + ((ulong)offset / 8 * Golden);
        for (int i = 0; i < words.Length; i++)
        {
            // SplitMix64 of (seed, word index), inlined: this loop is the whole cost of Create.
            ulong z = state;
            state += Golden;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            z ^= z >> 31;
            words[i] = BitConverter.IsLittleEndian ? z : BinaryPrimitives.ReverseEndianness(z);
        }
    }
}
