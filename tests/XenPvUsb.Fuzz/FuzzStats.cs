using System.Collections.Concurrent;
using System.Globalization;
using System.Text;

namespace XenPvUsb.Fuzz;

/// <summary>Counters of one run, and the findings (invariant violations) with the seed of the episode that made each.</summary>
public sealed class FuzzStats
{
    private readonly ConcurrentDictionary<string, long> _counters = new(StringComparer.Ordinal);
    private readonly ConcurrentQueue<string> _findings = new();

    public long Requests;
    public long Responses;
    public long Episodes;
    public long Ops;
    public long Reconnects;
    public long BystanderReads;
    public long BystanderBytes;

    public IReadOnlyCollection<string> Findings => _findings;

    public IReadOnlyDictionary<string, long> Counters => _counters;

    public void Count(string key, long n = 1) => _counters.AddOrUpdate(key, n, (_, v) => v + n);

    public void Finding(string text)
    {
        _findings.Enqueue(text);
        Console.Error.WriteLine($"FINDING: {text}");
    }

    public string Format(string prefix)
    {
        var sb = new StringBuilder();
        var groups = new SortedDictionary<string, List<(string, long)>>(StringComparer.Ordinal);
        foreach (KeyValuePair<string, long> kv in _counters)
        {
            int colon = kv.Key.IndexOf(':', StringComparison.Ordinal);
            string group = colon < 0 ? "" : kv.Key[..colon];
            if (!groups.TryGetValue(group, out List<(string, long)>? list))
            {
                groups[group] = list = new();
            }
            list.Add((colon < 0 ? kv.Key : kv.Key[(colon + 1)..], kv.Value));
        }
        foreach ((string group, List<(string, long)> list) in groups)
        {
            list.Sort((a, b) => b.Item2.CompareTo(a.Item2));
            sb.Append(CultureInfo.InvariantCulture, $"{prefix}{group}:\n");
            foreach ((string name, long n) in list)
            {
                sb.Append(CultureInfo.InvariantCulture, $"{prefix}  {n,10}  {name}\n");
            }
        }
        return sb.ToString();
    }
}
