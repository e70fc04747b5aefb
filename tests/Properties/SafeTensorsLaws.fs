module SafeTensorsLaws

open System
open System.IO
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open Klf.Checkpoints
open Klf.Formats

let dtypes = [| torch.float32; torch.bfloat16; torch.float16; torch.float64; torch.int64; torch.int32; torch.int8; torch.uint8; torch.ScalarType.Bool |]

/// A random tensor set: (name, dtype index, shape, seed).
let genEntry =
    gen {
        let! name = Gen.elements [ "a"; "b.weight"; "model.layers.0.q_proj.weight"; "x.y.z"; "lm_head.weight"; "scalar" ]
        let! d = Gen.choose (0, dtypes.Length - 1)
        let! rank = Gen.choose (0, 3)
        let! shape = Gen.listOfLength rank (Gen.choose (0, 5))
        let! seed = Gen.choose (0, 100000)
        return name, d, shape |> List.map int64 |> Array.ofList, seed
    }

let makeTensor (d: int) (shape: int64[]) (seed: int) =
    use g = new torch.Generator(uint64 seed)
    let f = torch.randn(shape, generator = g).mul(Scalar.op_Implicit 100.0)
    let t = f.``to``(dtypes[d])
    f.Dispose()
    t

let withTemp f =
    let path = Path.Combine(Path.GetTempPath(), $"klf-st-{Guid.NewGuid():N}.safetensors")
    try f path finally if File.Exists path then File.Delete path

[<Tests>]
let tests =
    testList "safetensors laws" [
        testPropertyWithConfig (PropertyConfig.config 60) "save then load is bit-exact for every dtype and shape" <|
            Prop.forAll (Arb.fromGen (Gen.listOf genEntry)) (fun entries ->
                let entries = entries |> List.distinctBy (fun (n, _, _, _) -> n)
                withTemp (fun path ->
                    let tensors = entries |> List.map (fun (n, d, s, seed) -> n, makeTensor d s seed) |> dict
                    try
                        SafeTensors.Save(path, tensors)
                        let loaded = SafeTensors.Load path
                        try
                            loaded.Count = tensors.Count
                            && tensors |> Seq.forall (fun kv ->
                                let l = loaded[kv.Key]
                                l.dtype = kv.Value.dtype && l.shape = kv.Value.shape && l.bytes.ToArray() = kv.Value.bytes.ToArray())
                        finally
                            for t in loaded.Values do t.Dispose()
                    finally
                        for t in tensors.Values do t.Dispose()))

        testPropertyWithConfig (PropertyConfig.config 40) "a truncated file is rejected with its name, never half-read" <|
            Prop.forAll (Arb.fromGen (Gen.choose (1, 200))) (fun cut ->
                withTemp (fun path ->
                    use t = torch.ones([| 64L |], dtype = torch.float32)
                    SafeTensors.Save(path, [ Collections.Generic.KeyValuePair("w", t) ])
                    let bytes = File.ReadAllBytes path
                    File.WriteAllBytes(path, bytes[.. max 0 (bytes.Length - 1 - cut)])
                    try
                        SafeTensors.Load path |> ignore
                        false
                    with :? InvalidDataException as e -> e.Message.Contains path))
    ]
