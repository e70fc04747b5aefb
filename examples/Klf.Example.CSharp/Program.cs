// Driving Klf from C#: two tasks in sequence on a tiny LLaMA-family model, KIF identifying
// important skill units from the gradients and fusing the model after the second task.
// The tasks work on token ids directly (no tokenizer needed): task A maps a prompt to its first
// token, task B to its last token. Run: scripts/pack.sh, then dotnet run -c Release in this folder
// (the project references the Klf.Core package from the local feed, as a user project does).
using Klf.Fusion;
using Klf.Kif;
using Klf.Models;
using Klf.Training;

Klf.Native.TorchNative.EnsureLoaded();
TorchSharp.torch.manual_seed(1);
var model = LanguageModels.FromPreset("llama-tiny");

static LmExample[] Task(int seed, Func<int[], int> answer)
{
    var rng = new Random(seed);
    return Enumerable.Range(0, 96).Select(_ =>
    {
        var prompt = Enumerable.Range(0, rng.Next(3, 8)).Select(_ => rng.Next(3, 60)).ToArray();
        return new LmExample(prompt, [answer(prompt)]);
    }).ToArray();
}

var tasks = new (string Name, LmExample[] Examples)[]
{
    ("first-token", Task(1, p => p[0])),
    ("last-token", Task(2, p => p[^1])),
};
var options = new TrainerOptions(BatchSize: 16, MaxSteps: 40, Seed: 3, Optimizer: new OptimizerOptions(LearningRate: 3e-3, WarmupSteps: 4));

using var session = new KifSession(model, KifOptions.FullFineTuning());
foreach (var (name, examples) in tasks)
{
    var hooks = session.BeginTask(name);
    var steps = Trainer.Fit(model, examples, options, hooks);
    var result = session.EndTask();
    Console.WriteLine($"{name}: loss {steps[0].Loss:F3} -> {steps[^1].Loss:F3}, {result.StepsCounted} steps scored, " +
                      $"{result.ImportantCurrent.Count(x => x)} of {result.ImportantCurrent.Length} units important");
    if (result.Fusion is { } report)
        Console.WriteLine($"fusion ({report.Rule}): shared {report.Shared}, previous-only {report.PreviousOnly}, " +
                          $"current-only {report.CurrentOnly}, neither {report.Neither}; {report.ElementCount} elements in {report.Elapsed.TotalMilliseconds:F0} ms");
}
foreach (var (name, examples) in tasks)
    Console.WriteLine($"after both tasks, loss on {name}: {Trainer.EvaluateLoss(model, examples):F3}");
model.Dispose();
