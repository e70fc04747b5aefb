using TorchSharp;
using static TorchSharp.torch;

namespace Klf.Models.Layers;

/// <summary>
/// The cached keys and values of one attention layer for incremental decoding, (B, H, S, D) each.
/// Positions are appended into a buffer allocated once along S (the capacity given, or doubled when
/// it runs out), so a decoding step copies only its new positions: decoding n tokens copies O(n)
/// positions in all, where concatenating the past at every step copies O(n²). Owns its tensors:
/// they are detached from every dispose scope and freed by <see cref="Dispose"/>.
/// </summary>
public sealed class KeyValueBuffer : IDisposable
{
    private readonly long _initialCapacity;
    private Tensor? _keyStore, _valueStore;   // (B, H, capacity, D)
    private Tensor? _keys, _values;           // views of positions [0, Length)

    /// <summary>An empty buffer that allocates room for <paramref name="capacity"/> positions at the first append (0: exactly what the first append needs).</summary>
    public KeyValueBuffer(long capacity = 0) => _initialCapacity = Math.Max(0, capacity);

    /// <summary>Number of cached positions S.</summary>
    public long Length { get; private set; }

    /// <summary>Positions the buffer holds before it must grow.</summary>
    public long Capacity => _keyStore?.shape[2] ?? 0;

    /// <summary>Cached keys (B, H, S, D), or null when empty. Owned by the buffer: valid until the next append, store or dispose.</summary>
    public Tensor? Keys => _keys;

    /// <summary>Cached values (B, H, S, D), or null when empty. Owned by the buffer, like <see cref="Keys"/>.</summary>
    public Tensor? Values => _values;

    /// <summary>
    /// Appends <paramref name="keys"/> and <paramref name="values"/> (B, H, T, D) and returns all cached
    /// keys and values (B, H, S + T, D), owned by the buffer (do not dispose them). The arguments are
    /// copied (detached), not kept or disposed.
    /// </summary>
    public (Tensor Keys, Tensor Values) Append(Tensor keys, Tensor values)
    {
        var t = keys.shape[2];
        if (_keyStore is null || Length + t > Capacity) Grow(keys, values, Length + t);
        using (no_grad())
        {
            using var k = _keyStore!.narrow(2, Length, t);
            using var v = _valueStore!.narrow(2, Length, t);
            k.copy_(keys);
            v.copy_(values);
        }
        Length += t;
        SetViews(_keyStore!.narrow(2, 0, Length), _valueStore!.narrow(2, 0, Length));
        return (_keys!, _values!);
    }

    /// <summary>
    /// Replaces the contents with <paramref name="keys"/> and <paramref name="values"/> themselves
    /// (B, H, S, D), taking ownership of them (cross-attention keys computed once).
    /// </summary>
    public void Store(Tensor keys, Tensor values)
    {
        if (ReferenceEquals(keys, _keys)) return;
        FreeAll();
        _keyStore = keys.DetachFromDisposeScope();
        _valueStore = values.DetachFromDisposeScope();
        Length = keys.shape[2];
        SetViews(_keyStore.alias(), _valueStore.alias());
    }

    /// <summary>The whole key store (B, H, Capacity, D), or null when empty: for kernels that write positions in place (then <see cref="Advance"/>).</summary>
    internal Tensor? KeyStore => _keyStore;

    /// <summary>The whole value store (B, H, Capacity, D), or null when empty; see <see cref="KeyStore"/>.</summary>
    internal Tensor? ValueStore => _valueStore;

    /// <summary>Counts <paramref name="t"/> positions written into the stores in place after the cached ones (within the capacity).</summary>
    internal void Advance(long t)
    {
        if (_keyStore is null || Length + t > Capacity) throw new InvalidOperationException($"the buffer holds {Capacity} positions; {Length} + {t} do not fit");
        Length += t;
        SetViews(_keyStore.narrow(2, 0, Length), _valueStore!.narrow(2, 0, Length));
    }

    /// <summary>Frees every tensor; the buffer is empty afterwards.</summary>
    public void Dispose() => FreeAll();

    private void Grow(Tensor keys, Tensor values, long needed)
    {
        long capacity = Math.Max(needed, Math.Max(_initialCapacity, 2 * Capacity));
        Tensor NewStore(Tensor like, Tensor? old)
        {
            var store = empty([like.shape[0], like.shape[1], capacity, like.shape[3]], like.dtype, like.device).DetachFromDisposeScope();
            if (old is not null && Length > 0)
            {
                using var target = store.narrow(2, 0, Length);
                using var source = old.narrow(2, 0, Length);
                target.copy_(source);
            }
            return store;
        }
        var k = NewStore(keys, _keyStore);
        var v = NewStore(values, _valueStore);
        var length = Length;
        FreeAll();
        (_keyStore, _valueStore, Length) = (k, v, length);
    }

    private void SetViews(Tensor keys, Tensor values)
    {
        _keys?.Dispose();
        _values?.Dispose();
        _keys = keys.DetachFromDisposeScope();
        _values = values.DetachFromDisposeScope();
    }

    private void FreeAll()
    {
        _keys?.Dispose(); _values?.Dispose();
        _keyStore?.Dispose(); _valueStore?.Dispose();
        _keys = _values = _keyStore = _valueStore = null;
        Length = 0;
    }
}
