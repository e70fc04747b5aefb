/// The command line of the repository's .fsx scripts: `--name value` pairs after the script's path.
module ScriptOptions

/// The arguments after the script's path.
let args = fsi.CommandLineArgs |> Array.skip 1 |> List.ofArray

/// The value that follows `name` in `given`, or `dflt` when `name` is absent.
let rec option name dflt given =
    match given with
    | n :: v :: _ when n = name -> v
    | _ :: rest -> option name dflt rest
    | [] -> dflt
