module Main
open Expecto

[<EntryPoint>]
let main argv =
    // Load TorchSharp's natives (patched if this system's libstdc++ needs it) before any test touches torch.
    Klf.Native.TorchNative.EnsureLoaded()
    runTestsInAssemblyWithCLIArgs [] argv
