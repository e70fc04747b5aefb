/// Small helpers shared by the commands: option construction and error reporting.
module Klf.Cli.Cli

open System
open System.CommandLine

/// An option with a description and an optional default.
let opt<'T> (name: string) (description: string) (defaultValue: 'T option) =
    let o = Option<'T>(name)
    o.Description <- description
    match defaultValue with
    | Some v -> o.DefaultValueFactory <- (fun _ -> v)
    | None -> ()
    o

/// A required option.
let req<'T> (name: string) (description: string) =
    let o = Option<'T>(name)
    o.Description <- description
    o.Required <- true
    o

/// Runs a command body; known error kinds become one clear line on stderr and exit code 1.
/// Exit code of a command that ran and failed (bad input, a missing or malformed file, refused settings).
[<Literal>]
let Failure = 1

/// Exit code of a command line that does not parse (unknown option or command, missing or unparsable value).
[<Literal>]
let UsageError = 2

let guard (body: unit -> int) : int =
    try body ()
    with
    | :? IO.FileNotFoundException
    | :? IO.DirectoryNotFoundException
    | :? IO.InvalidDataException
    | :? ArgumentException
    | :? InvalidOperationException
    | :? Klf.Checkpoints.CheckpointMismatchException as e ->
        eprintfn "klf: error: %s" e.Message
        Failure

/// A command with its options and an action.
let command (name: string) (description: string) (options: Option list) (action: ParseResult -> int) =
    let c = Command(name, description)
    for o in options do c.Options.Add o
    c.SetAction(fun (pr: ParseResult) -> guard (fun () -> action pr))
    c
