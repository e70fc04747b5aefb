namespace Klf.Pipelines

open System
open System.IO
open System.Text
open System.Text.Json

/// Task orders, read from an `orders.json` of the form
/// `{ "<benchmark>": { "<order name>": ["task", ...], ... }, ... }`.
[<RequireQualifiedAccess>]
module Orders =

    /// Reads an orders file: benchmark → order name → task names in order.
    let load (path: string) : Map<string, Map<string, string list>> =
        if not (File.Exists path) then raise (FileNotFoundException($"{path}: orders file not found", path))
        use doc =
            try JsonDocument.Parse(Klf.Formats.StrictJson.Decode(File.ReadAllBytes path, path), Klf.Formats.StrictJson.DocumentOptions)
            with :? JsonException as e -> raise (InvalidDataException($"{path}: not valid JSON ({e.Message})"))
        let objectOf where (e: JsonElement) =
            if e.ValueKind <> JsonValueKind.Object then
                raise (InvalidDataException($"{path}: {where} must be an object, found {e.ValueKind}"))
            e.EnumerateObject() |> Seq.map (fun p -> p.Name, p.Value) |> List.ofSeq
        [ for benchmark, orders in objectOf "the top level" doc.RootElement ->
            benchmark,
            Map [ for name, tasks in objectOf $"benchmark \"{benchmark}\"" orders ->
                    if tasks.ValueKind <> JsonValueKind.Array then
                        raise (InvalidDataException($"{path}: order \"{benchmark}.{name}\" must be an array of task names, found {tasks.ValueKind}"))
                    name,
                    [ for i, t in Seq.indexed (tasks.EnumerateArray()) ->
                        if t.ValueKind <> JsonValueKind.String then
                            raise (InvalidDataException($"{path}: order \"{benchmark}.{name}\" element {i} must be a task name string, found {t.ValueKind}"))
                        t.GetString() ] ] ]
        |> Map

    /// The benchmarks an orders map knows.
    let benchmarks (orders: Map<string, Map<string, string list>>) : string list = orders |> Map.keys |> List.ofSeq

    /// The task names of one order, e.g. `orders |> Orders.get "long_sequence" "order1"`.
    /// Unknown benchmarks or orders fail with a message listing the known ones.
    let get (benchmark: string) (orderName: string) (orders: Map<string, Map<string, string list>>) : string list =
        match Map.tryFind benchmark orders with
        | None ->
            let known = String.Join(", ", benchmarks orders)
            raise (ArgumentException($"unknown benchmark \"{benchmark}\"; known benchmarks: {known}"))
        | Some byName ->
            match Map.tryFind orderName byName with
            | Some tasks -> tasks
            | None ->
                let known = String.Join(", ", Map.keys byName)
                raise (ArgumentException($"unknown order \"{orderName}\" of benchmark \"{benchmark}\"; known orders: {known}"))

    /// Every order of an orders map as `benchmark/name`, e.g. ["standard/order1"; ...].
    let all (orders: Map<string, Map<string, string list>>) : string list =
        [ for KeyValue(b, byName) in orders do
            for KeyValue(n, _) in byName -> $"{b}/{n}" ]

    /// Where the orders of a benchmark root are looked for, in this order: the folder's own
    /// `orders.json`, then `orders.json` beside the folder (the layout of a folder of benchmarks).
    let candidates (root: string) : string list =
        let full = Path.TrimEndingDirectorySeparator(Path.GetFullPath root)
        [ Path.Combine(full, "orders.json")
          match Path.GetDirectoryName full with
          | null -> ()
          | parent -> Path.Combine(parent, "orders.json") ]

    /// The orders file of a benchmark root: the first of `candidates` that exists. When none does, a
    /// FileNotFoundException that says where they were looked for.
    let fileFor (root: string) : string =
        let cs = candidates root
        match cs |> List.tryFind File.Exists with
        | Some f -> f
        | None ->
            let where = String.Join(" or ", cs)
            raise (FileNotFoundException($"no orders.json for the benchmark {root}: looked for {where} (give --orders FILE)", List.head cs))

    /// The tasks of an order written `benchmark/name` (e.g. "standard/order1"), read from an orders
    /// file. An unknown order fails naming the file and listing every order it holds.
    let lookup (file: string) (reference: string) : string list =
        match reference.Split('/') with
        | [| b; n |] ->
            let orders = load file
            match Map.tryFind b orders |> Option.bind (Map.tryFind n) with
            | Some tasks -> tasks
            | None ->
                let known = match all orders with [] -> "none" | xs -> String.Join(", ", xs)
                raise (ArgumentException($"unknown order \"{reference}\" in {file}; the orders there: {known}"))
        | _ -> raise (ArgumentException($"order \"{reference}\" must read benchmark/name, e.g. standard/order1"))
