module Klf.Cli.Program

open System.CommandLine

[<EntryPoint>]
let main argv =
    let root = RootCommand("klf: continual learning for language models (KIF) on .NET")
    for c in [ Info.cmd; Init.cmd; Init.presets; Train.cmd; Generate.cmd; Eval.cmd; Fuse.cmd; Run.cmd; List.cmd; Klf.Cli.Report.Command.cmd; Bench.cmd; BenchFusion.cmd; Pretrain.cmd ] do root.Subcommands.Add c
    root.Parse(argv).Invoke()
