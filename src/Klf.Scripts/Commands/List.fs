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
                Directory.GetFiles trainDir |> Array.filter (fun f -> f.EndsWith ".json" || f.EndsWith ".jsonl")
                |> Array.map Path.GetFileNameWithoutExtension |> Array.sort
            else [||]
        printfn "benchmark  %s" (Path.GetFullPath root)
        printfn "tasks      %s" (String.Join(", ", tasks))
        let ordersPath = Path.Combine(Path.GetDirectoryName(Path.GetFullPath root), "orders.json")
        if File.Exists ordersPath then
            let orders = Orders.load ordersPath
            for b in Orders.benchmarks orders do
                for KeyValue(name, ts) in orders[b] do
                    printfn "order      %s/%s: %s" b name (String.Join(" -> ", ts))
        printfn "strategies %s" (String.Join(", ", Strategy.names))
        printfn "presets    %s" (String.Join(", ", LanguageModels.PresetNames))
        printfn "units      %s" (String.Join(", ", SkillUnitPartitioners.Names))
        printfn "fusion     %s" (String.Join(", ", Fusion.ruleNames))
        0)
