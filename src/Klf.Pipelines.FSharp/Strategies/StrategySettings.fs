namespace Klf.Pipelines

open System
open System.Globalization
open System.IO
open System.Text
open System.Text.Json.Nodes

/// A value in a strategy's settings, as written in a config or on the command line.
[<RequireQualifiedAccess>]
type Setting =
    | Num of float
    | Bool of bool
    | Str of string
    | List of Setting list
    /// Keys in the order written.
    | Table of (string * Setting) list

/// What a setting key holds; it decides how a value is read and whether a list is a sweep.
[<RequireQualifiedAccess>]
type SettingKind =
    | Number
    | Integer
    | Flag
    | Text
    /// A list of texts (a list of lists is a sweep).
    | Texts
    /// A list of numbers (a list of lists is a sweep).
    | Numbers
    /// A table with these keys.
    | Table of SettingKey list
    /// A fusion rule: its name, or a table {name, parameter: number, ...}.
    | Rule

/// A key a strategy accepts in its settings.
and SettingKey = { Key: string; Kind: SettingKind; Doc: string }

/// One strategy of an experiment: a registered name, the settings given for it (sweeps already
/// expanded, values normalised to their kinds) and the label that names it in run folders,
/// metrics.json, report.md and plots.
type StrategySpec =
    { Name: string
      Label: string
      Settings: (string * Setting) list }

/// Reading and writing setting values: JSON, the command-line form `name(key=value,…)`, labels.
[<RequireQualifiedAccess>]
module Setting =
    let private inv = CultureInfo.InvariantCulture

    /// A number as text: the shortest form that reads back exactly ("0.3", "5000", "1E-05").
    let numberText (x: float) = x.ToString("R", inv)

    /// A value from JSON (objects keep their key order; null is refused).
    let rec ofJson (where: string) (node: JsonNode) : Setting =
        match node with
        | null -> raise (InvalidDataException $"{where}: a value is missing (null)")
        | :? JsonObject as o -> Setting.Table [ for KeyValue(k, v) in o -> k, ofJson $"{where}.{k}" v ]
        | :? JsonArray as a -> Setting.List [ for x in a -> ofJson where x ]
        | :? JsonValue as v ->
            match v.GetValueKind() with
            | Text.Json.JsonValueKind.Number -> Setting.Num(v.GetValue<float>())
            | Text.Json.JsonValueKind.True -> Setting.Bool true
            | Text.Json.JsonValueKind.False -> Setting.Bool false
            | _ -> Setting.Str(v.GetValue<string>())
        | _ -> raise (InvalidDataException $"{where}: unsupported value")

    /// The value as JSON.
    let rec toJson (s: Setting) : JsonNode =
        match s with
        | Setting.Num x -> JsonValue.Create x
        | Setting.Bool b -> JsonValue.Create b
        | Setting.Str t -> JsonValue.Create t
        | Setting.List xs -> JsonArray([| for x in xs -> toJson x |])
        | Setting.Table kvs -> JsonObject([ for k, v in kvs -> Collections.Generic.KeyValuePair(k, toJson v) ])

    /// The value as it reads in a label or on the command line.
    let rec text (s: Setting) : string =
        match s with
        | Setting.Num x -> numberText x
        | Setting.Bool b -> (if b then "true" else "false")
        | Setting.Str t -> t
        | Setting.List xs -> "[" + String.Join(",", xs |> List.map text) + "]"
        | Setting.Table kvs -> "{" + String.Join(",", [ for k, v in kvs -> $"{k}={text v}" ]) + "}"

    /// `key=value` pairs of a settings list with tables flattened to dotted keys (`lambda.shared=0.5`).
    let rec flat (prefix: string) (kvs: (string * Setting) list) : (string * string) list =
        [ for k, v in kvs do
            let key = if prefix = "" then k else $"{prefix}.{k}"
            match v with
            | Setting.Table inner -> yield! flat key inner
            | v -> yield key, text v ]

    // A scalar written on the command line: a number, true/false, else text.
    let private scalar (t: string) =
        match Double.TryParse(t, NumberStyles.Float, inv) with
        | true, x when t <> "" && (Char.IsDigit t[0] || t[0] = '-' || t[0] = '.' || t[0] = '+') -> Setting.Num x
        | _ ->
            match t.ToLowerInvariant() with
            | "true" -> Setting.Bool true
            | "false" -> Setting.Bool false
            | _ -> Setting.Str t

    /// Splits on `sep` outside brackets and parentheses.
    let splitTop (sep: char) (text: string) : string list =
        let parts = ResizeArray<string>()
        let cur = StringBuilder()
        let mutable depth = 0
        for c in text do
            if c = '[' || c = '(' || c = '{' then depth <- depth + 1
            if c = ']' || c = ')' || c = '}' then depth <- depth - 1
            if c = sep && depth = 0 then
                parts.Add(cur.ToString())
                cur.Clear() |> ignore
            else cur.Append c |> ignore
        parts.Add(cur.ToString())
        [ for p in parts -> p.Trim() ] |> List.filter (fun p -> p <> "")

    /// A value written on the command line: `0.3`, `true`, `ties`, `[0.1,0.2]`, nested lists.
    let rec parseValue (where: string) (text: string) : Setting =
        let t = text.Trim()
        if t.StartsWith "[" then
            if not (t.EndsWith "]") then raise (InvalidDataException $"{where}: \"{t}\" opens a list that is not closed")
            Setting.List [ for p in splitTop ',' (t.Substring(1, t.Length - 2)) -> parseValue where p ]
        else scalar t

    /// Sets a dotted key (`lambda.shared`) in a settings list, keeping the order of first mention.
    let rec private setPath (path: string list) (value: Setting) (kvs: (string * Setting) list) =
        match path with
        | [] -> kvs
        | [ k ] -> if kvs |> List.exists (fst >> (=) k) then kvs |> List.map (fun (k2, v) -> if k2 = k then k2, value else k2, v) else kvs @ [ k, value ]
        | k :: rest ->
            let inner = match kvs |> List.tryFind (fst >> (=) k) with Some(_, Setting.Table t) -> t | _ -> []
            let updated = Setting.Table(setPath rest value inner)
            if kvs |> List.exists (fst >> (=) k) then kvs |> List.map (fun (k2, v) -> if k2 = k then k2, updated else k2, v) else kvs @ [ k, updated ]

    /// One strategy written on the command line: `kif` or `kif(top=0.3,lambda.shared=0.5,gamma=[0.5,0.9])`,
    /// as a name and its settings (dotted keys become tables).
    let parseStrategy (where: string) (text: string) : string * (string * Setting) list =
        let t = text.Trim()
        match t.IndexOf '(' with
        | -1 -> t, []
        | i ->
            if not (t.EndsWith ")") then raise (InvalidDataException $"{where}: \"{t}\" must read name(key=value,...)")
            let name = t.Substring(0, i).Trim()
            let body = t.Substring(i + 1, t.Length - i - 2)
            let settings =
                splitTop ',' body
                |> List.fold (fun acc part ->
                    match part.IndexOf '=' with
                    | -1 -> raise (InvalidDataException $"{where}: \"{part}\" in {name}(...) must read key=value")
                    | j -> setPath (List.ofArray (part.Substring(0, j).Trim().Split('.'))) (parseValue where (part.Substring(j + 1))) acc) []
            name, settings

/// A strategy's settings with typed access; every error names the source, the strategy and the key.
type StrategySettings(source: string, strategy: string, values: (string * Setting) list) =
    let fail (key: string) (what: string) = raise (InvalidDataException $"{source}: strategy {strategy}: {key}: {what}")
    let find key = values |> List.tryFind (fst >> (=) key) |> Option.map snd

    /// Where the settings were written (a file, or `--strategies`).
    member _.Source = source
    /// The strategy's name.
    member _.Strategy = strategy
    /// The settings as given (after normalisation), in order.
    member _.Values = values
    /// Whether a key is set.
    member _.Has(key: string) = (find key).IsSome
    /// Raises the settings error for a key.
    member _.Fail(key: string, what: string) : 'a = fail key what

    /// A number, or the default.
    member _.Float(key: string, fallback: float) : float =
        match find key with
        | None -> fallback
        | Some(Setting.Num x) when Double.IsFinite x -> x
        | Some v -> fail key $"\"{Setting.text v}\" is not a finite number"

    /// A whole number, or the default.
    member _.Int(key: string, fallback: int) : int =
        match find key with
        | None -> fallback
        | Some(Setting.Num x) when x = Math.Round x && abs x < 2e9 -> int x
        | Some v -> fail key $"\"{Setting.text v}\" is not a whole number"

    /// A flag, or the default.
    member _.Bool(key: string, fallback: bool) : bool =
        match find key with
        | None -> fallback
        | Some(Setting.Bool b) -> b
        | Some v -> fail key $"\"{Setting.text v}\" is not true or false"

    /// An optional flag.
    member this.BoolOption(key: string) : bool option = if this.Has key then Some(this.Bool(key, false)) else None

    /// A text, or the default.
    member _.Text(key: string, fallback: string) : string =
        match find key with
        | None -> fallback
        | Some(Setting.Str t) -> t
        | Some v -> fail key $"\"{Setting.text v}\" is not a text"

    /// A list of texts, or the default.
    member _.Texts(key: string, fallback: string list) : string list =
        match find key with
        | None -> fallback
        | Some(Setting.List xs) -> xs |> List.map (function Setting.Str t -> t | v -> fail key $"\"{Setting.text v}\" is not a text")
        | Some v -> fail key $"\"{Setting.text v}\" is not a list of texts"

    /// A list of numbers, or the default.
    member _.Numbers(key: string, fallback: float list) : float list =
        match find key with
        | None -> fallback
        | Some(Setting.List xs) -> xs |> List.map (function Setting.Num x when Double.IsFinite x -> x | v -> fail key $"\"{Setting.text v}\" is not a finite number")
        | Some v -> fail key $"\"{Setting.text v}\" is not a list of numbers"

    /// A table's settings (empty when absent).
    member _.Table(key: string) : StrategySettings =
        match find key with
        | None -> StrategySettings(source, strategy, [])
        | Some(Setting.Table kvs) -> StrategySettings(source, $"{strategy} {key}", kvs)
        | Some v -> fail key $"\"{Setting.text v}\" is not a table of settings"

/// Normalising, expanding and labelling strategy settings against their keys.
[<RequireQualifiedAccess>]
module StrategySpec =
    /// The keys every strategy accepts.
    let commonKeys : SettingKey list =
        [ { Key = "label"; Kind = SettingKind.Text; Doc = "the name of this strategy's runs in folders, metrics.json, report.md and plots" }
          { Key = "best-validation"; Kind = SettingKind.Flag; Doc = "keep the weights of the lowest validation loss at the end of each task (default: on when the experiment holds validation examples)" } ]

    /// A strategy by name with no settings.
    let named (name: string) : StrategySpec = { Name = name; Label = name; Settings = [] }

    let private inv = CultureInfo.InvariantCulture

    // Coerces a scalar to a kind (YAML gives every scalar as text).
    let rec private coerce (err: string -> exn) (kind: SettingKind) (v: Setting) : Setting =
        let fail what : Setting = raise (err what)
        let num () =
            match v with
            | Setting.Num _ -> v
            | Setting.Str t ->
                match Double.TryParse(t, NumberStyles.Float, inv) with
                | true, x -> Setting.Num x
                | _ -> fail $"\"{t}\" is not a number"
            | v -> fail $"\"{Setting.text v}\" is not a number"
        match kind with
        | SettingKind.Number | SettingKind.Integer ->
            match num () with
            | Setting.Num x when not (Double.IsFinite x) -> fail $"{x} is not finite"
            | Setting.Num x when kind = SettingKind.Integer && x <> Math.Round x -> fail $"{Setting.numberText x} is not a whole number"
            | n -> n
        | SettingKind.Flag ->
            match v with
            | Setting.Bool _ -> v
            | Setting.Str t when t.ToLowerInvariant() = "true" || t.ToLowerInvariant() = "false" -> Setting.Bool(t.ToLowerInvariant() = "true")
            | v -> fail $"\"{Setting.text v}\" is not true or false"
        | SettingKind.Text ->
            match v with
            | Setting.Str _ -> v
            | Setting.Num x -> Setting.Str(Setting.numberText x)
            | Setting.Bool b -> Setting.Str(if b then "true" else "false")
            | v -> fail $"\"{Setting.text v}\" is not a text"
        | SettingKind.Texts ->
            match v with
            | Setting.List xs -> Setting.List(xs |> List.map (coerce err SettingKind.Text))
            | Setting.Str t -> Setting.List [ for p in t.Split(',', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries) -> Setting.Str p ]
            | v -> fail $"\"{Setting.text v}\" is not a list of texts"
        | SettingKind.Numbers ->
            match v with
            | Setting.List xs -> Setting.List(xs |> List.map (coerce err SettingKind.Number))
            | v -> fail $"\"{Setting.text v}\" is not a list of numbers"
        | SettingKind.Rule ->
            match v with
            | Setting.Str _ -> v
            | Setting.Table kvs ->
                Setting.Table [ for k, x in kvs -> k, (if k = "name" then coerce err SettingKind.Text x else coerce err SettingKind.Number x) ]
            | v -> fail $"\"{Setting.text v}\" is not a rule name or a table {{name, parameters}}"
        | SettingKind.Table _ -> v

    // A value is a sweep at a key when it is a list where the kind wants a scalar, or a list of
    // lists where it wants a list.
    let private isSweep (kind: SettingKind) (v: Setting) =
        match kind, v with
        | (SettingKind.Texts | SettingKind.Numbers), Setting.List xs -> xs |> List.exists (function Setting.List _ -> true | _ -> false)
        | _, Setting.List _ -> true
        | _ -> false

    /// Every combination of the sweeps in `values` (a list where a key takes one value), each
    /// normalised to its kind, with the swept (key, value) pairs of each combination. Unknown keys
    /// are errors naming the key and listing the known ones.
    let rec expand (err: string -> string -> exn) (keys: SettingKey list) (values: (string * Setting) list)
        : ((string * Setting) list * (string * Setting) list) list =
        let fail key what : 'a = raise (err key what)
        let byKey = keys |> List.map (fun k -> k.Key, k) |> Map.ofList
        let known = String.Join(", ", keys |> List.map (fun k -> k.Key))
        let choices =
            [ for k, v in values ->
                let key = match byKey.TryFind k with Some key -> key | None -> fail k $"unknown setting (known: {known})"
                let alternatives = if isSweep key.Kind v then (match v with Setting.List xs -> xs | x -> [ x ]) else [ v ]
                if alternatives.IsEmpty then fail k "an empty list sweeps over nothing"
                let swept = alternatives.Length > 1 || isSweep key.Kind v
                [ for alt in alternatives do
                    match key.Kind with
                    | SettingKind.Table inner ->
                        let table = match alt with Setting.Table kvs -> kvs | x -> fail k $"\"{Setting.text x}\" is not a table of settings"
                        for combo, innerSwept in expand (fun k2 what -> err $"{k}.{k2}" what) inner table ->
                            (k, Setting.Table combo), (if swept then [ k, Setting.Table combo ] else (if innerSwept.IsEmpty then [] else [ k, Setting.Table innerSwept ]))
                    | kind ->
                        let value = coerce (err k) kind alt
                        yield (k, value), (if swept then [ k, value ] else []) ] ]
        List.foldBack (fun (options: ((string * Setting) * (string * Setting) list) list) (acc: ((string * Setting) list * (string * Setting) list) list) ->
            [ for (kv, sw) in options do
                for rest, restSwept in acc -> kv :: rest, sw @ restSwept ]) choices [ [], [] ]

    /// The label of a strategy: `label` when given (plus the swept settings in parentheses), else
    /// the name with every setting: `kif(top=0.3,lambda.shared=0.5)`; just the name without settings.
    let label (name: string) (given: string option) (settings: (string * Setting) list) (swept: (string * Setting) list) : string =
        let body (kvs: (string * Setting) list) = String.Join(",", [ for k, v in Setting.flat "" kvs -> $"{k}={v}" ])
        match given with
        | Some l when swept.IsEmpty -> l
        | Some l -> $"{l}({body swept})"
        | None ->
            let rest = settings |> List.filter (fun (k, _) -> k <> "label")
            if rest.IsEmpty then name else $"{name}({body rest})"

    /// The spec as JSON: its name alone when it has no settings, else `{name, label?, settings…}`
    /// (the label only when it is not the default one).
    let toJson (spec: StrategySpec) : JsonNode =
        if spec.Settings.IsEmpty && spec.Label = spec.Name then JsonValue.Create spec.Name
        else
            let o = JsonObject()
            o["name"] <- JsonValue.Create spec.Name
            if spec.Label <> label spec.Name None spec.Settings [] then o["label"] <- JsonValue.Create spec.Label
            for k, v in spec.Settings do o[k] <- Setting.toJson v
            o

    /// A folder name for a label: letters, digits, '-', '_', '.' kept; '(' ',' '=' become '-', ')' dropped.
    let folderName (label: string) : string =
        let sb = StringBuilder()
        for c in label do
            if Char.IsAsciiLetterOrDigit c || c = '-' || c = '_' || c = '.' then sb.Append c |> ignore
            elif c = ')' || c = ']' || c = '}' then ()
            else sb.Append '-' |> ignore
        sb.ToString()
