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

/// Adds a check of the option's value, run while the command line is parsed: a value the rule
/// refuses is a usage error (exit 2) that names the option, before anything runs or is written.
let check (rule: 'T -> string option) (o: Option<'T>) : Option<'T> =
    o.Validators.Add(fun r ->
        let problem = try rule (r.GetValueOrDefault<'T>()) with _ -> None
        match problem with
        | Some p -> r.AddError($"{o.Name} {p}")
        | None -> ())
    o

/// An integer at least `lo`.
let atLeast (lo: int) (v: int) = if v < lo then Some $"must be at least {lo}, got {v}" else None

/// A 64-bit integer at least `lo`.
let atLeast64 (lo: int64) (v: int64) = if v < lo then Some $"must be at least {lo}, got {v}" else None

/// A finite number above 0.
let finitePositive (v: float) = if Double.IsFinite v && v > 0.0 then None else Some $"must be a finite number above 0, got {v}"

/// A finite number at least 0.
let finiteNonNegative (v: float) = if Double.IsFinite v && v >= 0.0 then None else Some $"must be a finite number of at least 0, got {v}"

/// A number in [lo, hi] (both ends included).
let within (lo: float) (hi: float) (v: float) = if v >= lo && v <= hi then None else Some $"must lie in [{lo}, {hi}], got {v}"

/// A number in (lo, hi) (ends excluded).
let between (lo: float) (hi: float) (v: float) = if v > lo && v < hi then None else Some $"must lie strictly between {lo} and {hi}, got {v}"

/// The first existing file among `path` and the folders above it (`None`: nothing in the way).
let rec private fileInTheWay (path: string) : string option =
    if String.IsNullOrEmpty path then None
    elif IO.File.Exists path then Some path
    elif IO.Directory.Exists path then None
    else fileInTheWay (IO.Path.GetDirectoryName path)

/// A folder the command will write: not an existing file, and no file where a folder above it must be.
let folderToWrite (v: string) =
    if String.IsNullOrEmpty v then None
    else
        match fileInTheWay (IO.Path.GetFullPath v) with
        | Some f when f = IO.Path.GetFullPath v -> Some $"\"{v}\" is a file; give a folder"
        | Some f -> Some $"\"{v}\" cannot be created: \"{f}\" is a file"
        | None -> None

/// A file the command will write: not an existing folder, and no file where a folder above it must be.
let fileToWrite (v: string) =
    if String.IsNullOrEmpty v then None
    elif IO.Directory.Exists v then Some $"\"{v}\" is a folder; give a file path"
    else
        match fileInTheWay (IO.Path.GetDirectoryName(IO.Path.GetFullPath v)) with
        | Some f -> Some $"\"{v}\" cannot be created: \"{f}\" is a file"
        | None -> None

/// Exit code of a command that ran and failed (bad input, a missing or malformed file, refused settings).
[<Literal>]
let Failure = 1

/// Exit code of a command line that does not parse (unknown option or command, missing or unparsable value).
[<Literal>]
let UsageError = 2

/// Whether `KLF_DEBUG` (any value but empty or 0) asks for the stack trace of an error.
let debugging () =
    match Environment.GetEnvironmentVariable "KLF_DEBUG" with
    | null | "" | "0" -> false
    | _ -> true

/// The exception a user should read: wrappers (aggregate, type initialisation, reflection) unwrapped.
let rec innermost (e: exn) : exn =
    match e with
    | :? AggregateException as a when a.InnerExceptions.Count = 1 -> innermost a.InnerExceptions[0]
    | :? TypeInitializationException | :? Reflection.TargetInvocationException when not (isNull e.InnerException) -> innermost e.InnerException
    | _ -> e

/// One line for an error: the message's first line (libtorch appends a C++ backtrace to its
/// messages); errors that are neither bad input nor the environment are marked as klf's own.
let describe (e: exn) : string =
    let e = innermost e
    let first (m: string) =
        let line = (if isNull m then "" else m).Split('\n') |> Array.tryFind (fun l -> l.Trim() <> "") |> Option.defaultValue ""
        line.Trim()
    match e with
    | :? IO.IOException
    | :? UnauthorizedAccessException
    | :? IO.InvalidDataException
    | :? ArgumentException
    | :? InvalidOperationException
    | :? FormatException
    | :? NotSupportedException
    | :? Klf.Checkpoints.CheckpointMismatchException -> first e.Message
    | :? Runtime.InteropServices.ExternalException -> $"libtorch: {first e.Message}"
    | :? OutOfMemoryException -> $"out of memory ({first e.Message})"
    | _ -> $"internal error ({e.GetType().Name}: {first e.Message}); KLF_DEBUG=1 shows where"

/// Runs a command body at the command boundary: any error becomes one line on stderr,
/// `klf: error: …`, naming the file or flag and the problem, and exit code 1; with `KLF_DEBUG=1`
/// the full exception follows.
let guard (body: unit -> int) : int =
    try body ()
    with e ->
        eprintfn "klf: error: %s" (describe e)
        if debugging () then eprintfn "%O" e
        Failure

/// A command with its options and an action.
let command (name: string) (description: string) (options: Option list) (action: ParseResult -> int) =
    let c = Command(name, description)
    for o in options do c.Options.Add o
    c.SetAction(fun (pr: ParseResult) -> guard (fun () -> action pr))
    c
