/// Lets the plots render when Klf.Reports is loaded by a host that does not read the program's
/// deps.json (e.g. `#r` from an .fsx script under `dotnet fsi`): SkiaSharp and HarfBuzzSharp would
/// not find their native libraries in `runtimes/<rid>/native` beside the assembly otherwise.
module Klf.Reports.SkiaNative

open System
open System.IO
open System.Reflection
open System.Runtime.InteropServices

let private rid () =
    let arch =
        match RuntimeInformation.ProcessArchitecture with
        | Architecture.X64 -> "x64"
        | Architecture.Arm64 -> "arm64"
        | Architecture.X86 -> "x86"
        | Architecture.Arm -> "arm"
        | a -> a.ToString().ToLowerInvariant()
    if OperatingSystem.IsWindows() then "win-" + arch
    elif OperatingSystem.IsMacOS() then "osx"
    else "linux-" + arch

let private fileName (name: string) =
    if OperatingSystem.IsWindows() then name + ".dll"
    elif OperatingSystem.IsMacOS() then "lib" + name + ".dylib"
    else "lib" + name + ".so"

let private resolver =
    DllImportResolver(fun name _ _ ->
        let here = Path.GetDirectoryName(Assembly.GetExecutingAssembly().Location)
        let candidate = Path.Combine(here, "runtimes", rid (), "native", fileName (Path.GetFileNameWithoutExtension name |> fun n -> if n.StartsWith "lib" then n.Substring 3 else n))
        match File.Exists candidate, NativeLibrary.TryLoad candidate with
        | true, (true, handle) -> handle
        | _ -> IntPtr.Zero)

let private installed =
    lazy (
        for asm in [ typeof<SkiaSharp.SKBitmap>.Assembly; typeof<HarfBuzzSharp.Blob>.Assembly ] do
            // A host that set its own resolver (or ran this already) keeps it.
            try NativeLibrary.SetDllImportResolver(asm, resolver) with :? InvalidOperationException -> ())

/// Installs the resolver once (idempotent); the default probing still runs first when it finds nothing.
let ensure () = installed.Force()
