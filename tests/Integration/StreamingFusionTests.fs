/// Checkpoint fusion tensor by tensor (CheckpointFusion.Run): sharded checkpoints of two models are
/// fused without loading either, into sharded output equal bit for bit to KIF's in-memory step on
/// the loaded models; every rule that fuses in place, in temporaries or slice by slice, on whole and
/// neuron units; nothing written on refusal.
module StreamingFusionTests

open System
open System.IO
open Expecto
open TorchSharp
open Klf.Models
open Klf.Checkpoints
open Klf.SkillUnits
open Klf.Importance
open Klf.Fusion
open Klf.Kif

let private bits (t: torch.Tensor) = t.contiguous().data<float32>().ToArray() |> Array.map BitConverter.SingleToInt32Bits

let private perturb (model: ILanguageModel) (seed: uint64) =
    use _ng = torch.no_grad()
    use g = new torch.Generator(seed)
    for p in model.Module.parameters() do
        use noise = torch.randn(p.shape, generator = g) * 0.02
        p.add_(noise) |> ignore

[<Tests>]
let tests =
    testSequenced <| testList "streaming fusion" [
        test "sharded checkpoints fuse tensor by tensor into sharded output equal to KifStep.Fuse on the loaded models, bit for bit; a refusal writes nothing" {
            let dir = Directory.CreateTempSubdirectory("klf-stream-").FullName
            try
                torch.manual_seed 41L |> ignore
                use a = LanguageModels.FromPreset "llama-tiny"
                let shard = 60_000L // llama-tiny is ~460 KB in float32: about eight shards
                Checkpoint.Save(a, Path.Combine(dir, "A"), maxShardBytes = shard) |> ignore
                perturb a 42UL
                Checkpoint.Save(a, Path.Combine(dir, "B"), maxShardBytes = shard) |> ignore
                Expect.isTrue (File.Exists(Path.Combine(dir, "A", HfWeights.IndexFile))) "the inputs are sharded"
                let rules : IFusionRule list = [ KifStaticRule(); KifAdaptiveRule(); TaskArithmeticRule(0.7); TiesRule(); DareRule(); MagMaxRule() ]
                for partitioner in [ FullFineTuningPartitioner() :> ISkillUnitPartitioner; NeuronPartitioner(16) ] do
                    use b = ModelFolder.Load(Path.Combine(dir, "B"))
                    let map = partitioner.Partition b
                    let rng = Random(3)
                    let profile (name: string) =
                        let p = Path.Combine(dir, $"{name}-{partitioner.Name}.json")
                        ImportanceProfile.FromMap(map, ImportanceMath.MinMax(Array.init map.Count (fun _ -> rng.NextDouble())), [| TaskImportance(name, Array.init map.Count (fun _ -> rng.NextDouble())) |]).Save p
                        p
                    let prevFile, curFile = profile "first", profile "second"
                    for rule in rules do
                        let options = KifOptions(Partitioner = partitioner, Rule = rule)
                        let out = Path.Combine(dir, $"F-{partitioner.Name}-{rule.Name}")
                        let result =
                            CheckpointFusion.Run(
                                CheckpointFusionRequest(Previous = Path.Combine(dir, "A"), Current = Path.Combine(dir, "B"), PreviousImportance = prevFile,
                                                        CurrentImportance = curFile, Output = out, Options = options, Seed = 7L))
                        Expect.isTrue (File.Exists(Path.Combine(out, HfWeights.IndexFile))) $"{rule.Name}: sharded output"
                        // In memory: the loaded models and KIF's own step.
                        use reference = ModelFolder.Load(Path.Combine(dir, "B"))
                        use previousModel = ModelFolder.Load(Path.Combine(dir, "A"))
                        use snapshot = ParameterSnapshot.TakeTrainable previousModel
                        let prevScores = (ImportanceProfile.Load(prevFile, map)).AlignTo map
                        let curScores = (ImportanceProfile.Load(curFile, map)).AlignTo map
                        let step = KifStep.Fuse(reference, snapshot, null, map, prevScores, curScores, options, 7L)
                        Expect.equal result.Categories step.Categories $"{rule.Name}: the same categories"
                        Expect.equal (ImportanceProfile.Load(Path.Combine(out, CheckpointFusion.ImportanceFile), map).AlignTo map) step.Accumulated $"{rule.Name}: the same Â"
                        use fused = ModelFolder.Load out
                        Checkpoint.ReadManifest out |> ignore // hashes verify
                        let live = reference.Module.named_parameters() |> Seq.map (fun struct (n, p) -> n, p) |> Map.ofSeq
                        for struct (n, p) in fused.Module.named_parameters() do
                            if bits p <> bits live[n] then failtestf "%s, %s: %s differs from the in-memory step" partitioner.Name rule.Name n
                // A refusal (non-finite current values) leaves no output folder and no temporary beside it.
                do
                    use bad = ModelFolder.Load(Path.Combine(dir, "B"))
                    use _ng = torch.no_grad()
                    (bad.Module.named_parameters() |> Seq.last |> fun struct (_, p) -> p).fill_(Single.NaN) |> ignore
                    Checkpoint.Save(bad, Path.Combine(dir, "NaN"), maxShardBytes = shard) |> ignore
                let full = FullFineTuningPartitioner()
                use bModel = ModelFolder.Load(Path.Combine(dir, "B"))
                let map = full.Partition bModel
                let p = Path.Combine(dir, "flat.json")
                ImportanceProfile.FromMap(map, Array.init map.Count (fun i -> float i / float map.Count)).Save p
                let refused = Path.Combine(dir, "refused")
                Expect.throwsT<UnsafeFusionException> (fun () ->
                    CheckpointFusion.Run(CheckpointFusionRequest(Previous = Path.Combine(dir, "A"), Current = Path.Combine(dir, "NaN"), PreviousImportance = p,
                                                                 CurrentImportance = p, Output = refused)) |> ignore) "refused"
                Expect.isFalse (Directory.Exists refused) "no output"
                Expect.isEmpty (Directory.GetFileSystemEntries dir |> Array.filter (fun e -> Path.GetFileName(e).StartsWith ".refused")) "no temporary"
            finally
                Directory.Delete(dir, true)
        }
    ]
