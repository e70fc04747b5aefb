/// The repository against its own description: docs/layout.md names every source file of src/,
/// tests/, scripts/ and examples/, and no file that does not exist.
module RepositoryTests

open System
open System.IO
open System.Text.RegularExpressions
open Expecto

let private repo = Path.GetFullPath(Path.Combine(__SOURCE_DIRECTORY__, "..", ".."))

/// Source, project and script files under the repository's code folders (build output excluded).
let private sourceFiles () =
    let kinds = set [ ".cs"; ".fs"; ".fsx"; ".fsproj"; ".csproj"; ".yaml"; ".sh"; ".js"; ".py" ]
    [ for top in [ "src"; "tests"; "scripts"; "examples" ] do
        for f in Directory.EnumerateFiles(Path.Combine(repo, top), "*", SearchOption.AllDirectories) do
            let rel = Path.GetRelativePath(repo, f).Replace('\\', '/')
            let parts = rel.Split('/')
            if kinds.Contains(Path.GetExtension f) && not (parts |> Array.exists (fun p -> p = "bin" || p = "obj")) then
                yield rel ]
    |> set

[<Tests>]
let tests =
    testList "repository" [
        test "docs/layout.md names every source file, and only files that exist" {
            let layout = File.ReadAllText(Path.Combine(repo, "docs", "layout.md"))
            let named =
                [ for m in Regex.Matches(layout, @"^\| `([^`]+)` \|", RegexOptions.Multiline) -> m.Groups[1].Value ] |> set
            let files = sourceFiles ()
            Expect.isEmpty (Set.difference files named) "files the layout does not name"
            Expect.isEmpty (Set.difference named files) "names in the layout that are no file"
        }
    ]
