module Klf.Cli.Program
open TorchSharp
[<EntryPoint>]
let main argv =
    Klf.Native.TorchNative.EnsureLoaded()
    let t = torch.ones(3L, 3L)
    printfn "%A %s patched=%b" (t.sum().item<float32>()) Klf.Native.TorchNative.LoadedFrom Klf.Native.TorchNative.Patched
    0
