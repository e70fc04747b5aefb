using static TorchSharp.torch;

namespace Klf.Checkpoints;

/// <summary>
/// Reads the tensors of the next key on a worker thread while the caller works on the current one,
/// for passes over a checkpoint in a known order (fusing tensor by tensor): the file reads and their
/// kernel copies then overlap the caller's compute and writes. At most one key is read ahead, so the
/// memory held is the current key's tensors plus the next one's. Reads alternate between two slots
/// (0 and 1), so a reader may read into two sets of reused buffers: the tensors of one
/// <see cref="Take"/> are then valid until the next. Tensors handed out belong to the caller; those
/// read ahead and never taken are disposed by <see cref="Dispose"/>.
/// </summary>
internal sealed class TensorPrefetcher : IDisposable
{
    private readonly IReadOnlyList<string> _order;
    private readonly Dictionary<string, int> _position;
    private readonly Func<string, int, Tensor[]> _read;
    private (string Key, Task<Tensor[]> Reading)? _ahead;
    private int _slot;

    /// <param name="order">The keys in the order they will be taken (keys not in it are read on demand).</param>
    /// <param name="read">Reads one key's tensors into a slot (0 or 1, alternating); called on a worker thread, so it must not rely on a dispose scope.</param>
    public TensorPrefetcher(IReadOnlyList<string> order, Func<string, int, Tensor[]> read)
    {
        _order = order;
        _read = read;
        _position = new Dictionary<string, int>(order.Count);
        for (var i = 0; i < order.Count; i++) _position[order[i]] = i;
    }

    /// <summary>The tensors of <paramref name="key"/> (read ahead, or now), and starts reading the key after it.</summary>
    public Tensor[] Take(string key)
    {
        Tensor[] tensors;
        if (_ahead is { } ahead && ahead.Key == key)
        {
            _ahead = null;
            tensors = Await(ahead.Reading);
        }
        else
        {
            DropAhead();
            tensors = _read(key, _slot);
        }
        _slot = 1 - _slot;   // the slot just handed out stays untouched until the next Take
        if (_position.TryGetValue(key, out var i) && i + 1 < _order.Count)
        {
            var (next, slot) = (_order[i + 1], _slot);
            _ahead = (next, Task.Factory.StartNew(() => _read(next, slot), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default));
        }
        return tensors;
    }

    /// <summary>Waits for a read ahead still running and disposes what it read.</summary>
    public void Dispose() => DropAhead();

    private void DropAhead()
    {
        if (_ahead is not { } ahead) return;
        _ahead = null;
        try { foreach (var t in Await(ahead.Reading)) t.Dispose(); }
        catch (Exception) { } // a read that failed for a key nobody took is no error
    }

    // The reader's own exception, not an AggregateException: errors name the file at fault.
    private static Tensor[] Await(Task<Tensor[]> reading) => reading.GetAwaiter().GetResult();
}
