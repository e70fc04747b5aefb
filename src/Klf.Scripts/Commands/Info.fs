/// `klf info`: versions, native library status, threads.
module Klf.Cli.Info

open TorchSharp
open Klf.Cli.Cli

let cmd =
    command "info" "Show versions, where TorchSharp's native library was loaded from, and the compute device." [] (fun _ ->
        Klf.Native.TorchNative.EnsureLoaded()
        let asmVer (t: System.Type) = t.Assembly.GetName().Version.ToString()
        printfn "klf             %s" (asmVer typeof<Klf.Models.ILanguageModel>)
        printfn "TorchSharp      %s" (asmVer typeof<torch>)
        printfn "native library  %s%s" Klf.Native.TorchNative.LoadedFrom (if Klf.Native.TorchNative.Patched then " (patched for this system's libstdc++)" else "")
        printfn "CUDA available  %b" (torch.cuda.is_available ())
        printfn "threads         %d" (torch.get_num_threads ())
        0)
