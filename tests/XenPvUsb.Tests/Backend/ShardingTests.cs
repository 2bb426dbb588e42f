using System.Security.Cryptography;
using XenPvUsb.Backend;
using XenPvUsb.Simulation.Devices;
using XenPvUsb.Simulation.Guest;
using XenPvUsb.Tests.Support;
using XenPvUsb.Xen;

namespace XenPvUsb.Tests.Backend;

/// <summary>Controllers spread over several event loops: each lives on one with its devices, and all serve at once.</summary>
[TestFixture]
public sealed class ShardingTests
{
    [Test]
    public async Task Controllers_AreSpreadOverTheLoops_AndAllServeAtOnce()
    {
        await using SimWorld world = await SimWorld.StartAsync(loops: 2);
        var sticks = new List<(GuestHandle Guest, string Image)>();
        for (int i = 0; i < 3; i++)
        {
            string image = Path.Combine(world.Directory, $"s{i}.img");
            StickImage.Create(image, 512 * 1024, seed: 40 + i);
            GuestHandle g = await world.AddGuestAsync($"g{i}", 2, 2, world.Plug(new MassStorageDevice(image, readOnly: true)));
            sticks.Add((g, image));
        }
        EventLoop[] loops = [.. sticks.Select(s => world.Registry.Find(s.Guest.Id, s.Guest.DevId)!.Loop)];
        Assert.That(loops.Distinct().Count(), Is.EqualTo(2), "both loops have controllers");
        Assert.That(loops.Count(l => l == world.Loop), Is.EqualTo(2), "the least loaded loop first: 1, 2, 1");

        byte[][] read = await Task.WhenAll(sticks.Select(async s =>
        {
            var storage = new GuestMassStorage(await GuestUsbDevice.EnumerateAsync(s.Guest.Frontend, 1, 2)) { ScatterReads = true };
            await storage.ReadCapacityAsync();
            byte[] all = new byte[storage.BlockCount * storage.BlockSize];
            for (int lba = 0; lba < storage.BlockCount; lba += GuestMassStorage.BlocksPerCommand)
            {
                int n = (int)Math.Min(GuestMassStorage.BlocksPerCommand, storage.BlockCount - lba);
                await storage.ReadAsync((uint)lba, all.AsMemory(lba * 512, n * 512));
            }
            return all;
        }));
        for (int i = 0; i < 3; i++)
        {
            Assert.That(SHA256.HashData(read[i]), Is.EqualTo(SHA256.HashData(await File.ReadAllBytesAsync(sticks[i].Image))));
            VusbBackend b = world.Registry.Find(sticks[i].Guest.Id, sticks[i].Guest.DevId)!;
            UrbStatistics st = await b.Loop.InvokeAsync(() => b.Controller!.Statistics);
            Assert.That(st.Bytes, Is.GreaterThanOrEqualTo(512 * 1024));
        }
        Assert.That(await world.Registry.LogCountersAsync(), Is.EqualTo(3));

        // The one controller of the second loop goes: the next one takes its place there.
        EventLoop second = loops[1];
        await world.Toolstack.DestroyControllerAsync(sticks[1].Guest.Id, sticks[1].Guest.DevId);
        await world.WaitForGoneAsync($"/local/domain/0/backend/vusb/{sticks[1].Guest.Id.Value}/{sticks[1].Guest.DevId}");
        for (int i = 0; i < 100 && world.Registry.Find(sticks[1].Guest.Id, sticks[1].Guest.DevId) is not null; i++)
        {
            await Task.Delay(20);
        }
        GuestHandle next = await world.AddGuestAsync("g3", 2, 2);
        Assert.That(world.Registry.Find(next.Id, next.DevId)!.Loop, Is.SameAs(second));
    }
}
