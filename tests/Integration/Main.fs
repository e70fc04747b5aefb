module Main
open Expecto

[<EntryPoint>]
let main argv =
    match argv with
    | [| "--native-probe" |] ->
        // Used by the native-loading tests: a child process that only loads torch and computes.
        Klf.Native.TorchNative.EnsureLoaded()
        let s = TorchSharp.torch.arange(4L).sum().item<int64>()
        printfn "NATIVE-OK sum=%d patched=%b from=%s" s Klf.Native.TorchNative.Patched Klf.Native.TorchNative.LoadedFrom
        0
    | _ ->
        // Load TorchSharp's natives (patched if this system's libstdc++ needs it) before any test touches torch.
        Klf.Native.TorchNative.EnsureLoaded()
        // Sequenced: several tests count live tensors process-wide (leak checks), which tests running
        // in parallel would disturb.
        runTestsInAssemblyWithCLIArgs [ Sequenced ] argv
