module Klf.Cli.Program

open System.CommandLine

[<EntryPoint>]
let main argv =
    let root = RootCommand("klf: continual learning for language models (KIF) on .NET")
    for c in [ Info.cmd; Init.cmd; Init.presets; Train.cmd; Generate.cmd; Eval.cmd; Fuse.cmd; Run.cmd; List.cmd; Import.cmd; ReportCommand.cmd; Bench.cmd; Pretrain.cmd ] do root.Subcommands.Add c
    let parsed = root.Parse(argv)
    if parsed.Errors.Count > 0 then
        // A command line that does not parse is a usage error (exit 2), told apart from a command
        // that ran and failed (exit 1), as Unix tools do.
        for e in parsed.Errors do eprintfn "klf: usage: %s" e.Message
        let cmd = parsed.CommandResult.Command.Name
        let help = if cmd = root.Name then "klf --help" else $"klf {cmd} --help"
        eprintfn "(see %s)" help
        Cli.UsageError
    else parsed.Invoke()
