namespace Klf.Models;

/// <summary>
/// A module that carries parameters beside a base weight of the model (a LoRA adapter) and must
/// sit on that weight's device in its dtype. The trainer calls <see cref="SyncToBase"/> on every
/// such module before building its optimizer, so adapters follow a model moved after they were
/// added; it knows adapters only through this interface.
/// </summary>
public interface IFollowsBaseWeight
{
    /// <summary>Moves this module's own parameters to the base weight's device and dtype (a no-op when they are there).</summary>
    void SyncToBase();
}
