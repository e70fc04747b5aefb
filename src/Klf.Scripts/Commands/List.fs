/// `klf list`: what can be named on the command line.
module Klf.Cli.List

open System
open System.IO
open Klf.Models
open Klf.SkillUnits
open Klf.Pipelines
open Klf.Cli.Cli
open Klf.Cli.Common

let private benchmark = benchmarkOption

let cmd =
    command "list" "List benchmark tasks, task orders, strategies, model presets, skill-unit partitioners and fusion rules." [ benchmark ] (fun pr ->
        let root = benchmarkRoot (pr.GetValue benchmark)
        let trainDir = Path.Combine(root, "train")
        let tasks =
            if Directory.Exists trainDir then
                Directory.GetFiles trainDir |> Array.filter (fun f -> TaskFile.extensions |> List.exists (fun e -> f.EndsWith e))
                |> Array.map TaskFile.taskName |> Array.distinct |> Array.sort
            else [||]
        printfn "benchmark  %s" (Path.GetFullPath root)
        printfn "tasks      %s" (String.Join(", ", tasks))
        let fallback, perTask = Benchmark.metrics root
        let source = if File.Exists(Benchmark.infoFile root) then Benchmark.infoFile root else "no benchmark.json: the default"
        let others = if perTask.IsEmpty then "" else "; " + String.Join(", ", perTask |> Seq.map (fun (KeyValue(t, m)) -> $"{t} {m}"))
        printfn "metrics    %s for every task%s (%s)" fallback others source
        match Orders.candidates root |> List.tryFind File.Exists with
        | None -> printfn "orders     none (looked for %s)" (String.Join(" or ", Orders.candidates root))
        | Some ordersPath ->
            let orders = Orders.load ordersPath
            for b in Orders.benchmarks orders do
                for KeyValue(name, ts) in orders[b] do
                    printfn "order      %s/%s: %s" b name (String.Join(" -> ", ts))
        printfn "strategies %s" (String.Join(", ", Strategy.names ()))
        printfn "presets    %s" (String.Join(", ", LanguageModels.PresetNames))
        printfn "units      %s" (String.Join(", ", SkillUnitPartitioners.Names))
        printfn "fusion     %s" (String.Join(", ", Fusion.ruleNames ()))
        printfn ""
        printfn "strategy settings (e.g. --strategies 'kif(top=0.3,lambda.neither=1)'; every strategy also takes label and best-validation):"
        for d in Strategy.definitions () do
            printfn "  %-11s %s" d.Name d.Doc
            let rec keys (prefix: string) (ks: SettingKey list) =
                for k in ks do
                    match k.Kind with
                    | SettingKind.Table inner -> keys $"{prefix}{k.Key}." inner
                    | _ -> printfn "      %-26s %s" (prefix + k.Key) k.Doc
            keys "" d.Keys
        printfn ""
        printfn "fusion rule parameters (rule: {name: NAME, parameter: value} in a KIF strategy, or klf fuse --rule NAME --param k=v):"
        for r in Klf.Fusion.FusionRules.Definitions do
            let ps = [ for p in r.Parameters -> $"{p.Name}={Setting.numberText p.Default}" ]
            let aliases = match r.Aliases with null -> "" | a when a.Count = 0 -> "" | a -> " (also " + String.Join(", ", a) + ")"
            printfn "  %-16s %s%s%s" r.Name r.Description aliases (if ps.IsEmpty then "" else "; " + String.Join(", ", ps))
        0)
