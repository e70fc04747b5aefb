using Klf.Fusion;
using Klf.Models;

namespace Klf.Training;

/// <summary>
/// Measures the validation loss during a training run and keeps a copy of the trainable weights of
/// the lowest one (strictly lower replaces: the earliest of equal losses is kept, as Hugging Face's
/// <c>load_best_model_at_end</c> does). Owns that copy; <see cref="Finish"/> writes it back.
/// </summary>
internal sealed class BestWeights : IDisposable
{
    private readonly ILanguageModel _model;
    private readonly ValidationSet _set;
    private readonly TrainerOptions _options;
    private readonly List<ValidationPoint> _points = new();
    private ParameterSnapshot? _best;
    private ValidationPoint? _bestPoint;
    private int _lastStep;

    public BestWeights(ILanguageModel model, ValidationSet set, TrainerOptions options)
    {
        _model = model;
        _set = set;
        _options = options;
    }

    public IReadOnlyList<ValidationPoint> Points => _points;

    /// <summary>Measures after <paramref name="step"/> main steps when the interval has passed or <paramref name="final"/>.</summary>
    public void Measure(int step, bool final)
    {
        if (step == _lastStep || (!final && step - _lastStep < _set.EvalEvery)) return;
        var loss = Trainer.EvaluateLoss(_model, _set.Examples, _set.BatchSize, _options.MaxLength, _options.MaxTargetLength, _options.Truncation);
        _lastStep = step;
        var point = new ValidationPoint(step, loss);
        _points.Add(point);
        if (!_set.KeepBest || !Better(loss)) return;
        _bestPoint = point;
        if (final) return;   // the model already holds these weights and keeps them
        if (_best is null) _best = ParameterSnapshot.TakeTrainable(_model);
        else _best.Refresh(_model);
    }

    // NaN never beats a number.
    private bool Better(double loss) =>
        _bestPoint is null || loss < _bestPoint.Loss || (double.IsNaN(_bestPoint.Loss) && !double.IsNaN(loss));

    /// <summary>Writes the best weights back (when they are not the final ones) and returns the kept point.</summary>
    public ValidationPoint? Finish()
    {
        if (_points.Count == 0) return null;
        if (!_set.KeepBest) return _points[^1];
        if (_bestPoint!.Step != _points[^1].Step) _best!.RestoreTo(_model);
        return _bestPoint;
    }

    public void Dispose() => _best?.Dispose();
}
