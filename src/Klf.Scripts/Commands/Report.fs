/// `klf report DIR...`: merges the finished runs of run folders (shards of one experiment, other
/// seeds) into metrics.json with means and standard deviations over seeds, report.md and plots;
/// regenerates the report of a folder that holds only a metrics.json (`Klf.Reports.RunReport`).
module Klf.Cli.ReportCommand

open System.CommandLine
open System.IO
open Klf.Reports
open Klf.Cli.Cli

let private dirs =
    let a = Argument<string[]>("DIR")
    a.Description <- "Run folders of `klf run` (e.g. one per shard), or folders holding only a metrics.json."
    a.Arity <- ArgumentArity.OneOrMore
    a

let private out = opt<string> "--out" "Where the merged metrics.json, report.md and plots go (default: the first DIR)." None |> check folderToWrite

let cmd =
    let c = command "report" "Merge run folders (shards, seeds) into metrics.json (means and standard deviations over seeds), report.md and PNG plots; a folder holding only a metrics.json gets its report regenerated." [ out ] (fun pr ->
        let given = pr.GetValue dirs |> List.ofArray
        for d in given do
            if not (Directory.Exists d) then raise (DirectoryNotFoundException $"no run folder {d}")
        let withRuns = given |> List.filter (fun d -> Directory.Exists(Path.Combine(d, "runs")))
        if withRuns.IsEmpty then
            for dir in given do
                let written = RunReport.regenerate dir
                printfn "wrote %s and %d plots beside it" (Path.GetFullPath written.Head) written.Tail.Length
        else
            let target = match pr.GetValue out with null | "" -> withRuns.Head | o -> o
            for m in RunReport.merge withRuns target do
                printfn "wrote %s, report.md and plots beside it" (Path.GetFullPath m)
        0)
    c.Arguments.Add dirs
    c
