module Main
open Expecto

[<EntryPoint>]
let main argv =
    // Load TorchSharp's natives (patched if this system's libstdc++ needs it) before any test touches torch.
    Klf.Native.TorchNative.EnsureLoaded()
    // Sequenced: some laws count live tensors process-wide, which parallel tests would disturb.
    runTestsInAssemblyWithCLIArgs [ Sequenced ] argv
