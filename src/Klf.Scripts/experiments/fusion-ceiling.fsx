// How much of an earlier task can ANY unit-wise fusion keep? Trains task A, then task B from the
// result (plain fine-tuning, the embedded default's settings), and scores fusions of the two models
// θ_A and θ_B on both tasks' test examples:
//   1. the straight line θ_A + α (θ_B − θ_A), α = 0 … 1 (α = 1 is SeqFT);
//   2. one family of tensors taken from θ_B, the rest kept from θ_A (and the reverse): token
//      embedding (tied with the LM head), attention, MLP, norm weights;
//   3. an oracle: λ ∈ {0, 0.3, 0.5, 1} chosen per group (each layer's attention, each layer's MLP,
//      all norms, the embedding) by greedy search (`passes` sweeps from SeqFT) on the TEST scores — an upper bound for fusion
//      rules at that granularity, which KIF's static table (λ ∈ {0, 0.3, 0.5, 1} per unit) is one of.
// When even the oracle cannot keep A without giving up B, the model stores both tasks' answers in
// the same parameters and no rule at that granularity can beat sequential fine-tuning.
//
// Make the package feed first (scripts/pack.sh), then:
//   dotnet fsi src/Klf.Scripts/experiments/fusion-ceiling.fsx [a=dbpedia] [b=agnews] [steps=60] [lr=1e-3]
//       [seed=1] [test=100] [passes=1] [model=DIR]
// model=DIR replaces the embedded klf-tiny (the tasks stay the embedded Standard CL excerpt).
// From the local feed scripts/pack.sh writes, found through the repository's NuGet.config; a script
// elsewhere adds it with #i "nuget: /absolute/path/to/artifacts/nuget".
#r "nuget: Klf.Pipelines"
#load "ScriptArgs.fsx"

open System
open System.IO
open TorchSharp
open Klf.Pipelines
open Klf.Training

let args = ScriptArgs.parse fsi.CommandLineArgs
let arg k d = ScriptArgs.tryGet args k |> Option.defaultValue d

Klf.Native.TorchNative.EnsureLoaded()
let repo = Path.GetFullPath(Path.Combine(__SOURCE_DIRECTORY__, "..", "..", ".."))
let spec0 = ExperimentSpec.embeddedWith (Path.Combine(repo, "models", "klf-tiny")) (Path.Combine(repo, "data", "standard-cl"))
let spec =
    { spec0 with
        Model = (match Map.tryFind "model" args with Some m -> Folder m | None -> spec0.Model)
        Tokenizer = (match Map.tryFind "model" args with Some m -> Some m | None -> spec0.Tokenizer)
        Steps = ScriptArgs.int args "steps" 60
        LearningRate = ScriptArgs.float args "lr" 1e-3
        TestExamples = ScriptArgs.int args "test" 100 }
let seed = ScriptArgs.int args "seed" 1
let tok = Klf.Tokenizers.TokenizerLoader.FromFolder(spec.Tokenizer.Value)
let data = spec.Benchmark.Value
let pick name =
    let t = Task.load data name
    (TaskSequence.create "pair" [ t ] |> TaskSequence.subsample seed { Train = spec.TrainExamples; Test = spec.TestExamples }).Tasks.Head
let a, b = pick (arg "a" "dbpedia"), pick (arg "b" "agnews")
let options = Experiment.trainerOptions spec seed
let model = Experiment.makeModel spec tok torch.CPU seed

/// Score of task `t` and its three most frequent answers, from one greedy generation.
let evaluate (t: TaskData) =
    let predictions = Evaluate.predictionsWithin options model tok (Task.maxNewTokens (fun s -> tok.Encode s) t) t.Test
    let score = Scoring.score (Metric.ofName t.Metric) predictions (t.Test |> Array.map (fun e -> e.Output))
    let answers =
        predictions |> Array.countBy (fun p -> p.Trim()) |> Array.sortByDescending snd |> Array.truncate 3
        |> Array.map (fun (s, n) -> $"{s} ×{n}") |> String.concat ", "
    score, answers
let snapshot () = model.Module.named_parameters() |> Seq.map (fun struct (n, p) -> n, p.detach().clone()) |> Array.ofSeq
let train (t: TaskData) = Trainer.Fit(model, Prompt.examples model.Family tok t.Train, options) |> ignore

train a
let thetaA = snapshot ()
train b
let thetaB = snapshot ()
let live = dict [ for struct (n, p) in model.Module.named_parameters() -> n, p ]
/// Loads θ_A + λ(name) (θ_B − θ_A) into the model and scores both tasks.
let load (lambda: string -> float) =
    use _ = torch.no_grad()
    for (n, x), (_, y) in Array.zip thetaA thetaB do
        use d = y - x
        use v = x + lambda n * d
        live[n].copy_ v |> ignore
/// Scores of both tasks and A's most frequent answers for that fusion.
let fuse (lambda: string -> float) =
    load lambda
    let sa, answers = evaluate a
    sa, fst (evaluate b), answers

printfn "θ_A = %s, %d steps, lr %g, seed %d; θ_B = θ_A then %s; %d test examples each" a.Name spec.Steps spec.LearningRate seed b.Name spec.TestExamples
printfn ""
printfn "| fusion | %s | %s | sum | most frequent answers on %s |" a.Name b.Name a.Name
printfn "| --- | ---: | ---: | ---: | --- |"
let row label (sa: float, sb: float, answers: string) = printfn "| %s | %.1f | %.1f | %.1f | %s |" label sa sb (sa + sb) answers
for alpha in [ 0.0; 0.25; 0.5; 0.75; 1.0 ] do
    row $"θ_A + {alpha} (θ_B − θ_A)" (fuse (fun _ -> alpha))
let families =
    [ "embedding", fun (n: string) -> n.Contains "embed_tokens" || n.Contains "lm_head"
      "attention", fun n -> n.Contains ".self_attn."
      "MLP", fun n -> n.Contains ".mlp."
      "norm weights", fun n -> n.Contains "norm" ]
for name, isIn in families do
    row $"{name} from θ_B, rest θ_A" (fuse (fun n -> if isIn n then 1.0 else 0.0))
    row $"{name} from θ_A, rest θ_B" (fuse (fun n -> if isIn n then 0.0 else 1.0))

let group (n: string) =
    if n.Contains "embed_tokens" || n.Contains "lm_head" then "embedding"
    elif n.Contains "norm" then "norms"
    else
        let layer = n.Split('.') |> Array.pairwise |> Array.tryPick (fun (x, y) -> if x = "layers" then Some y else None) |> Option.defaultValue "?"
        $"layer {layer} " + (if n.Contains ".self_attn." then "attention" else "MLP")
let groups = thetaA |> Array.map (fst >> group) |> Array.distinct
let mutable best = groups |> Array.map (fun g -> g, 1.0) |> Map.ofArray
let total (sa, sb, _) = sa + sb
let mutable bestResult = fuse (fun n -> best[group n])
for _ in 1 .. ScriptArgs.int args "passes" 1 do
    for g in groups do
        for v in [ 0.0; 0.3; 0.5; 1.0 ] do
            if best[g] <> v then
                let candidate = best.Add(g, v)
                let result = fuse (fun n -> candidate[group n])
                if total result > total bestResult then
                    best <- candidate
                    bestResult <- result
let chosen = groups |> Array.map (fun g -> $"{g} {best[g]}") |> String.concat "; "
row $"oracle λ per group ({chosen})" bestResult
