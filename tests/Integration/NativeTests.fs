module NativeTests

open System
open System.Diagnostics
open System.IO
open Expecto
open Klf.Native

/// Runs a process, returning (exit code, stdout + stderr).
let run (exe: string) (args: string list) (timeoutMs: int) =
    let psi = ProcessStartInfo(exe, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
    for a in args do psi.ArgumentList.Add a
    // A child must find natives on its own: no inherited hints.
    psi.Environment.Remove "LD_LIBRARY_PATH" |> ignore
    use p = Process.Start psi
    let out = p.StandardOutput.ReadToEndAsync()
    let err = p.StandardError.ReadToEndAsync()
    if not (p.WaitForExit timeoutMs) then
        p.Kill true
        failwithf "%s %A timed out" exe args
    p.WaitForExit()
    p.ExitCode, out.Result + err.Result

[<System.Runtime.InteropServices.DllImport("libc", SetLastError = true)>]
extern int link(string oldpath, string newpath)

/// Mirrors a folder with hard links (copies where linking fails), so a test can alter files in the copy only.
let rec mirror (src: string) (dst: string) =
    Directory.CreateDirectory dst |> ignore
    for f in Directory.GetFiles src do
        let target = Path.Combine(dst, Path.GetFileName f)
        let linked =
            try OperatingSystem.IsLinux() && link (f, target) = 0 with _ -> false
        if not linked then File.Copy(f, target, true)
    for d in Directory.GetDirectories src do
        mirror d (Path.Combine(dst, Path.GetFileName d))

let nugetRoot () =
    match Environment.GetEnvironmentVariable "NUGET_PACKAGES" with
    | null | "" -> Path.Combine(Environment.GetFolderPath Environment.SpecialFolder.UserProfile, ".nuget", "packages")
    | p -> p

let pristineLibTorchSharp () =
    let v = typeof<TorchSharp.torch>.Assembly.GetName().Version
    let p = Path.Combine(nugetRoot (), "torchsharp", $"{v.Major}.{v.Minor}.{v.Build}", "runtimes", "linux-x64", "native", "libLibTorchSharp.so")
    if not (File.Exists p) then failwithf "pristine LibTorchSharp not found at %s (restore the solution first)" p
    p

let systemHasGlibcxx3432 () =
    [ "/usr/lib/x86_64-linux-gnu/libstdc++.so.6"; "/usr/lib64/libstdc++.so.6"; "/lib/x86_64-linux-gnu/libstdc++.so.6" ]
    |> List.tryFind File.Exists
    |> Option.map (fun p -> (File.ReadAllBytes p |> Text.Encoding.ASCII.GetString).Contains "GLIBCXX_3.4.32")
    |> Option.defaultValue false

/// A copy of this test program's output folder as a fresh build leaves it: LibTorchSharp exactly
/// as shipped in the package. Returns (folder, path of LibTorchSharp in it).
let freshOutputCopy (prefix: string) =
    let tmp = Path.Combine(Path.GetTempPath(), prefix + Guid.NewGuid().ToString("N"))
    mirror AppContext.BaseDirectory tmp
    let lib = Path.Combine(tmp, "runtimes", "linux-x64", "native", "libLibTorchSharp.so")
    File.Delete lib
    File.Copy(pristineLibTorchSharp (), lib)
    tmp, lib

[<Tests>]
let tests =
    testList "native" [
        test "the native allocator plan: huge pages and heap retention unless the user set them or opted out; this process got its plan" {
            Expect.equal (NativeAllocator.Plan([ "PATH"; "HOME" ], null)) struct (true, true) "nothing set: both"
            Expect.equal (NativeAllocator.Plan([ "PATH"; NativeAllocator.HugePagesVariable ], null)) struct (false, true) "the user's THP choice wins"
            Expect.equal (NativeAllocator.Plan([ "MALLOC_ARENA_MAX" ], null)) struct (true, false) "any glibc tuning of the user's wins"
            Expect.equal (NativeAllocator.Plan([ "PATH" ], "default")) struct (false, false) "opted out"
            if OperatingSystem.IsLinux() then
                let names = Environment.GetEnvironmentVariables().Keys |> Seq.cast<string> |> List.ofSeq
                let struct (hugePages, heap) = NativeAllocator.Plan(names, Environment.GetEnvironmentVariable NativeAllocator.OptOutVariable)
                Expect.equal NativeAllocator.HugePages hugePages "huge pages as planned"
                Expect.equal NativeAllocator.HeapRetained heap "heap retention as planned (glibc)"
                if hugePages then
                    Expect.equal (Environment.GetEnvironmentVariable NativeAllocator.HugePagesVariable |> Option.ofObj) None ".NET's copy is untouched: only libc's environment changed"
        }
        test "the ELF patch marks only GLIBCXX_3.4.32 weak and is idempotent" {
            let bytes = File.ReadAllBytes(pristineLibTorchSharp ())
            let before = ElfVersionPatch.RequiredVersions bytes
            Expect.exists before (fun r -> r.Version = TorchNative.MissingVersion && not r.Weak) "pristine library requires GLIBCXX_3.4.32 strongly"
            let copy = Array.copy bytes
            Expect.isGreaterThan (ElfVersionPatch.MarkWeak(copy, TorchNative.MissingVersion)) 0 "first patch changes something"
            Expect.equal (ElfVersionPatch.MarkWeak(copy, TorchNative.MissingVersion)) 0 "second patch changes nothing"
            let after = ElfVersionPatch.RequiredVersions copy
            for (b, a) in Seq.zip before after do
                if a.Version = TorchNative.MissingVersion then Expect.isTrue a.Weak "now weak"
                else Expect.equal a b $"{a.Version} unchanged"
            let diff = Seq.zip bytes copy |> Seq.filter (fun (x, y) -> x <> y) |> Seq.length
            Expect.isLessThanOrEqual diff 2 "only the flag bytes differ"
        }

        test "a freshly built output folder with the shipped library loads torch, two processes at once" {
            if not (OperatingSystem.IsLinux()) then skiptest "Linux only"
            let tmp, lib = freshOutputCopy "klf-native-"
            try
                let dll = Path.Combine(tmp, "Klf.Tests.Integration.dll")
                let procs = [ for _ in 1..2 -> Threading.Tasks.Task.Run(fun () -> run "dotnet" [ dll; "--native-probe" ] 120000) ]
                let results = procs |> List.map (fun t -> t.Result)
                for (code, out) in results do
                    Expect.equal code 0 $"probe exits 0; output:\n{out}"
                    Expect.stringContains out "NATIVE-OK sum=6" "torch computed in the child"
                let expectPatched = not (systemHasGlibcxx3432 ())
                let patchedNow = ElfVersionPatch.RequiredVersions(File.ReadAllBytes lib) |> Seq.exists (fun r -> r.Version = TorchNative.MissingVersion && r.Weak)
                Expect.equal patchedNow expectPatched "the library is patched exactly when the system libstdc++ lacks GLIBCXX_3.4.32"
                Expect.isEmpty (Directory.GetFiles(Path.GetDirectoryName lib, "*.tmp")) "no temporary files left"
                // A second start finds the patched file and loads it directly.
                let code, out = run "dotnet" [ dll; "--native-probe" ] 120000
                Expect.equal code 0 out
                Expect.stringContains out "patched=false" "second start loads without patching again"
            finally
                try Directory.Delete(tmp, true) with _ -> ()
        }

        test "a dotnet fsi script that references the built assemblies runs torch" {
            if not (OperatingSystem.IsLinux()) then skiptest "Linux only"
            let tmp, _ = freshOutputCopy "klf-fsi-"
            try
                let script = Path.Combine(tmp, "probe.fsx")
                let torchDll = Path.Combine(tmp, "TorchSharp.dll")
                let coreDll = Path.Combine(tmp, "Klf.Core.dll")
                File.WriteAllText(script, String.concat "\n" [
                    $"#r \"{torchDll}\""
                    $"#r \"{coreDll}\""
                    "Klf.Native.TorchNative.EnsureLoaded()"
                    "let s = TorchSharp.torch.arange(4L).sum().item<int64>()"
                    "printfn \"FSI-OK sum=%d\" s" ])
                let code, out = run "dotnet" [ "fsi"; "--quiet"; script ] 300000
                Expect.equal code 0 out
                Expect.stringContains out "FSI-OK sum=6" "script computed with torch"
            finally
                try Directory.Delete(tmp, true) with _ -> ()
        }
    ]
