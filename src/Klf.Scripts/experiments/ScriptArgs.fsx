// key=value arguments of the experiment scripts: `#load "ScriptArgs.fsx"`, then
// `ScriptArgs.parse fsi.CommandLineArgs` and `ScriptArgs.get`/`int`/`float` with a default.
module ScriptArgs

/// The key=value pairs after the script's own path; anything else is an error naming it.
let parse (commandLine: string[]) : Map<string, string> =
    commandLine
    |> Array.skip 1
    |> Array.map (fun a ->
        match a.Split('=', 2) with
        | [| k; v |] -> k, v
        | _ -> failwithf "arguments are key=value, got %s" a)
    |> Map.ofArray

/// The value of `key`, if given.
let tryGet (args: Map<string, string>) (key: string) : string option = Map.tryFind key args

/// An integer argument, or `fallback`.
let int (args: Map<string, string>) (key: string) (fallback: int) : int =
    tryGet args key |> Option.map int |> Option.defaultValue fallback

/// A floating-point argument (invariant culture), or `fallback`.
let float (args: Map<string, string>) (key: string) (fallback: float) : float =
    tryGet args key
    |> Option.map (fun s -> System.Double.Parse(s, System.Globalization.CultureInfo.InvariantCulture))
    |> Option.defaultValue fallback
