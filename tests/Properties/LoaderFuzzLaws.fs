/// Fuzzed loaders: real files of every kind Klf reads, corrupted by FsCheck (flipped bytes,
/// truncations, insertions, deletions, duplicated spans, replaced JSON values, duplicated keys).
/// Every outcome is a faithful load or the loader's own clear error naming the file; never another
/// exception, a hang, or a load that differs from what the file says.
module LoaderFuzzLaws

open System
open System.IO
open System.Security.Cryptography
open System.Text
open System.Text.Json.Nodes
open System.Text.RegularExpressions
open System.Threading.Tasks
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open Klf.Formats
open Klf.Checkpoints
open Klf.SkillUnits
open Klf.Importance
open Klf.Pipelines

let private repo = Path.GetFullPath(Path.Combine(__SOURCE_DIRECTORY__, "..", ".."))
let private embedded = Path.Combine(repo, "models", "klf-tiny")

/// One corruption of a file's bytes. Positions and lengths are fractions of the file (or of the
/// safetensors header, when `InHeader`), so one generator serves files of any size.
type Mutation =
    | Flip of at: float * mask: byte * count: int
    | Truncate of at: float
    | Insert of at: float * bytes: byte[]
    | Delete of at: float * length: int
    | Duplicate of at: float * length: int
    | Replace of token: int * value: string
    | DuplicateKey of entry: int * value: string

/// A mutation and whether its positions fall in a safetensors header.
type Case = { Mutation: Mutation; InHeader: bool }

let private replacements =
    [ "-1"; "0"; "1e400"; "-0"; "1.5"; "99999999999"; "\"x\""; "\"\""; "null"; "true"; "[]"; "{}"; "[1,2]"; "\"F16\""; "\"BF16\"" ]

let private genCase =
    gen {
        let fraction = Gen.choose (0, 9999) |> Gen.map (fun i -> float i / 10000.0)
        let! at = fraction
        let! inHeader = Gen.frequency [ 3, Gen.constant true; 1, Gen.constant false ]
        let! mutation =
            Gen.oneof
                [ gen { let! mask = Gen.choose (1, 255) in let! count = Gen.choose (1, 4) in return Flip(at, byte mask, count) }
                  Gen.constant (Truncate at)
                  gen {
                      let! bytes = Gen.arrayOfLength 3 (Gen.elements [ 0uy; 0xFFuy; 0xC3uy; 0x80uy; byte '"'; byte '{'; byte '}'; byte ','; byte ':'; byte '['; byte '9'; byte '-'; byte 'e' ])
                      let! n = Gen.choose (1, 3)
                      return Insert(at, bytes[.. n - 1]) }
                  Gen.choose (1, 16) |> Gen.map (fun n -> Delete(at, n))
                  Gen.choose (1, 24) |> Gen.map (fun n -> Duplicate(at, n))
                  gen { let! k = Gen.choose (0, 400) in let! v = Gen.elements replacements in return Replace(k, v) }
                  gen { let! k = Gen.choose (0, 400) in let! v = Gen.elements replacements in return DuplicateKey(k, v) } ]
        return { Mutation = mutation; InHeader = inHeader }
    }

let private tokenPattern = Regex("-?\\d+(\\.\\d+)?([eE][+-]?\\d+)?|\"(?:[^\"\\\\]|\\\\.)*\"|true|false|null", RegexOptions.Compiled)
let private memberPattern = Regex("(\"(?:[^\"\\\\]|\\\\.)*\"\\s*:\\s*)(-?\\d+(?:\\.\\d+)?(?:[eE][+-]?\\d+)?|\"(?:[^\"\\\\]|\\\\.)*\"|true|false|null)(\\s*,)", RegexOptions.Compiled)

/// Applies a textual mutation (Replace, DuplicateKey) to JSON text.
let private mutateText (m: Mutation) (text: string) : string =
    match m with
    | Replace(k, v) ->
        let ms = tokenPattern.Matches text
        if ms.Count = 0 then text else let x = ms[k % ms.Count] in text.Substring(0, x.Index) + v + text.Substring(x.Index + x.Length)
    | DuplicateKey(k, v) ->
        let ms = memberPattern.Matches text
        if ms.Count = 0 then text
        else
            let x = ms[k % ms.Count]
            // The member again, right after itself, with another value: the same key twice in one object.
            text.Substring(0, x.Index + x.Length) + x.Groups[1].Value + v + "," + text.Substring(x.Index + x.Length)
    | _ -> text

/// Applies a byte mutation within [lo, hi) of `data` (positions are fractions of that span).
let private mutateBytes (m: Mutation) (lo: int) (hi: int) (data: byte[]) : byte[] =
    let span = max 1 (hi - lo)
    let pos (f: float) = lo + min (span - 1) (int (f * float span))
    match m with
    | Flip(at, mask, count) ->
        let d = Array.copy data
        for i in 0 .. count - 1 do
            let p = pos at + i * 7
            if p < d.Length then d[p] <- d[p] ^^^ mask
        d
    | Truncate at -> data[.. pos at - 1]
    | Insert(at, bytes) -> let p = pos at in Array.concat [ data[.. p - 1]; bytes; data[p ..] ]
    | Delete(at, n) -> let p = pos at in Array.append data[.. p - 1] data[min data.Length (p + n) ..]
    | Duplicate(at, n) ->
        let p = pos at
        let e = min data.Length (p + n)
        Array.concat [ data[.. e - 1]; data[p .. e - 1]; data[e ..] ]
    | Replace _ | DuplicateKey _ -> data

/// A file kind: its name, its original bytes, its loader (to a canonical text of what was loaded),
/// the loader's own error types, and whether the file is JSON.
type private Kind =
    { Name: string
      FileName: string
      Original: byte[]
      Load: string -> string
      Errors: Type list
      Json: bool }

let private sha (bytes: byte[]) = Convert.ToHexString(SHA256.HashData bytes)

/// What a safetensors file holds, from the file alone (an independent reading of the format): each
/// tensor's name, dtype, shape and the SHA-256 of its bytes, in name order. None when the header does
/// not describe data that tiles the file exactly.
let private independentSafetensors (bytes: byte[]) : string option =
    try
        if bytes.Length < 8 then None
        else
            let n = BitConverter.ToUInt64(bytes, 0)
            if n > uint64 (bytes.Length - 8) then None
            else
                let header = StrictJson.Parse(StrictJson.Decode(bytes[8 .. 8 + int n - 1], "header"), "header") :?> JsonObject
                let data = bytes[8 + int n ..]
                let sizes = dict [ "F64", 8L; "F32", 4L; "F16", 2L; "BF16", 2L; "I64", 8L; "I32", 4L; "I16", 2L; "I8", 1L; "U8", 1L; "BOOL", 1L ]
                let entries =
                    [ for KeyValue(k, v) in header do
                        if k <> "__metadata__" then
                            let o = v :?> JsonObject
                            let dtype = o["dtype"].GetValue<string>()
                            let shape = [ for d in o["shape"].AsArray() -> d.GetValue<int64>() ]
                            let offs = [ for d in o["data_offsets"].AsArray() -> d.GetValue<int64>() ]
                            yield k, dtype, shape, offs ]
                let ok =
                    entries |> List.forall (fun (_, dtype, shape, offs) ->
                        sizes.ContainsKey dtype && List.forall (fun d -> d >= 0L) shape && offs.Length = 2
                        && offs[1] - offs[0] = (List.fold (*) 1L shape) * sizes[dtype] && offs[0] >= 0L)
                    && (let sorted = entries |> List.map (fun (_, _, _, o) -> o[0], o[1]) |> List.sort
                        let ends = List.scan (fun _ (_, e) -> e) 0L sorted
                        List.forall2 (fun (b, _) prevEnd -> b = prevEnd) sorted (List.take sorted.Length ends)
                        && (List.last ends) = int64 data.Length)
                if not ok then None
                else
                    Some(String.Join("\n", [ for k, dtype, shape, offs in List.sortBy (fun (k, _, _, _) -> k) entries ->
                                               let shapeText = String.Join(",", shape)
                                               $"{k} {dtype} [{shapeText}] {sha data[int offs[0] .. int offs[1] - 1]}" ]))
    with _ -> None

let private dtypeName (t: torch.ScalarType) =
    match t with
    | torch.ScalarType.Float64 -> "F64" | torch.ScalarType.Float32 -> "F32" | torch.ScalarType.Float16 -> "F16"
    | torch.ScalarType.BFloat16 -> "BF16" | torch.ScalarType.Int64 -> "I64" | torch.ScalarType.Int32 -> "I32"
    | torch.ScalarType.Int16 -> "I16" | torch.ScalarType.Int8 -> "I8" | torch.ScalarType.Byte -> "U8" | torch.ScalarType.Bool -> "BOOL"
    | other -> string other

let private loadSafetensors (path: string) =
    let loaded = SafeTensors.Load path
    try
        String.Join("\n", [ for KeyValue(k, t) in loaded |> Seq.sortBy (fun kv -> kv.Key) ->
                              let shapeText = String.Join(",", t.shape)
                              $"{k} {dtypeName t.dtype} [{shapeText}] {sha (t.bytes.ToArray())}" ])
    finally
        for t in loaded.Values do t.Dispose()

let private kinds : Lazy<Kind list> =
    lazy (
        let dir = Directory.CreateTempSubdirectory("klf-fuzz-src-").FullName
        // A small checkpoint-like safetensors file: several dtypes and shapes, metadata.
        let st = Path.Combine(dir, "model.safetensors")
        let tensors =
            dict [ "model.embed_tokens.weight", torch.randn([| 6L; 4L |], generator = new torch.Generator(1UL))
                   "model.norm.weight", torch.ones([| 4L |], dtype = torch.bfloat16)
                   "step", torch.tensor([| 3L |])
                   "mask", torch.tensor([| true; false; true |]) ]
        SafeTensors.Save(st, tensors, readOnlyDict [ "format", "pt" ])
        for t in tensors.Values do t.Dispose()
        // The first 12 examples of a real task file.
        let taskText =
            let all = JsonNode.Parse(File.ReadAllText(Path.Combine(repo, "data", "standard-cl", "train", "agnews.json"))).AsArray()
            JsonArray([| for i in 0 .. 11 -> all[i].DeepClone() |]).ToJsonString(Text.Json.JsonSerializerOptions(WriteIndented = true))
        // The embedded model's unit map, for an importance profile with a history.
        let map =
            use model = ModelFolder.Load embedded
            FullFineTuningPartitioner().Partition model
        let profile = Path.Combine(dir, "importance.json")
        let scores = Array.init map.Count (fun i -> float ((i * 37) % 11) / 10.0)
        ImportanceProfile.FromMap(map, scores, [| TaskImportance("agnews", scores) |]).Save profile
        let adapter = Klf.Adapters.PeftAdapterConfig.ToJson(Klf.Adapters.LoraConfig.ForRank(8, [| "q_proj"; "v_proj" |])).ToJsonString(Text.Json.JsonSerializerOptions(WriteIndented = true))
        let probe = [ "The quick brown fox jumps over the lazy dog."; "Börse 42 — ☃ ünïcödé"; "" ]
        let kinds =
            [ { Name = "safetensors"; FileName = "model.safetensors"; Original = File.ReadAllBytes st; Load = loadSafetensors
                Errors = [ typeof<InvalidDataException> ]; Json = false }
              { Name = "task file"; FileName = "agnews.json"; Original = Encoding.UTF8.GetBytes taskText
                Load = (fun p -> sprintf "%A" (TaskFile.load p)); Errors = [ typeof<InvalidDataException> ]; Json = true }
              { Name = "orders.json"; FileName = "orders.json"; Original = File.ReadAllBytes(Path.Combine(repo, "benchmarks", "long_sequence", "orders.json"))
                Load = (fun p -> sprintf "%A" (Orders.load p)); Errors = [ typeof<InvalidDataException> ]; Json = true }
              { Name = "importance profile"; FileName = "importance.json"; Original = File.ReadAllBytes profile
                Load = (fun p ->
                    let x = ImportanceProfile.Load(p, map)
                    sprintf "%s %s %A %A" x.Partitioner x.Fingerprint (List.ofSeq x.UnitIds) [ for s in x.Scores -> BitConverter.DoubleToInt64Bits s ]
                    + String.Join(";", [ for h in x.History -> h.Task + ":" + String.Join(",", [ for s in h.Scores -> BitConverter.DoubleToInt64Bits s ]) ]))
                Errors = [ typeof<InvalidDataException> ]; Json = true }
              { Name = "tokenizer.model"; FileName = "tokenizer.model"; Original = File.ReadAllBytes(Path.Combine(embedded, "tokenizer.model"))
                Load = (fun p ->
                    let tok = Klf.Tokenizers.TokenizerLoader.FromSentencePieceFile p
                    sprintf "%d %A" tok.VocabSize [ for s in probe -> List.ofSeq (tok.Encode s) ])
                Errors = [ typeof<InvalidDataException> ]; Json = false }
              { Name = "config.json"; FileName = "config.json"; Original = File.ReadAllBytes(Path.Combine(embedded, "config.json"))
                Load = (fun p -> Klf.Models.Llama.LlamaConfig.FromFile(p).ToJson().ToJsonString())
                Errors = [ typeof<InvalidDataException>; typeof<FormatException> ]; Json = true }
              { Name = "adapter_config.json"; FileName = "adapter_config.json"; Original = Encoding.UTF8.GetBytes adapter
                Load = (fun p -> Klf.Adapters.PeftAdapterConfig.ToJson(Klf.Adapters.PeftAdapterConfig.Read p).ToJsonString())
                Errors = [ typeof<InvalidDataException> ]; Json = true } ]
        Directory.Delete(dir, true)
        kinds)

/// The bytes of a case: textual mutations act on the JSON (of a safetensors file, its header, with
/// the length prefix rewritten), byte mutations on the whole file or on the header.
let private apply (kind: Kind) (case: Case) : byte[] =
    let original = kind.Original
    match case.Mutation with
    | Replace _ | DuplicateKey _ when kind.Json -> Encoding.UTF8.GetBytes(mutateText case.Mutation (Encoding.UTF8.GetString original))
    | Replace _ | DuplicateKey _ when kind.Name = "safetensors" ->
        let n = int (BitConverter.ToUInt64(original, 0))
        let header = Encoding.UTF8.GetBytes(mutateText case.Mutation (Encoding.UTF8.GetString(original, 8, n)))
        Array.concat [ BitConverter.GetBytes(uint64 header.Length); header; original[8 + n ..] ]
    | Replace _ | DuplicateKey _ -> original
    | m when case.InHeader && kind.Name = "safetensors" -> mutateBytes m 0 (8 + int (BitConverter.ToUInt64(original, 0))) original
    | m -> mutateBytes m 0 original.Length original

let private originalLoads = Collections.Concurrent.ConcurrentDictionary<string, string>()

/// How many cases of each kind ended in each outcome ("refused", "loaded the original", "loaded a change").
let outcomes = Collections.Concurrent.ConcurrentDictionary<string * string, int>()
let private count (kind: Kind) (outcome: string) = outcomes.AddOrUpdate((kind.Name, outcome), 1, fun _ n -> n + 1) |> ignore

/// Loads `bytes` as `kind` in a fresh folder, within 10 seconds; fails the property unless the load
/// is faithful or the error is the loader's own, naming the file.
let private check (kind: Kind) (bytes: byte[]) : bool =
    let dir = Directory.CreateTempSubdirectory("klf-fuzz-").FullName
    try
        let path = Path.Combine(dir, kind.FileName)
        File.WriteAllBytes(path, bytes)
        let original =
            originalLoads.GetOrAdd(kind.Name, fun _ ->
                let p = Path.Combine(dir, "original-" + kind.FileName)
                File.WriteAllBytes(p, kind.Original)
                kind.Load p)
        let work = Task.Run(fun () -> try Ok(kind.Load path) with e -> Error e)
        if not (work.Wait(TimeSpan.FromSeconds 10.0)) then failwithf "%s: the load did not finish in 10 s" kind.Name
        match work.Result with
        | Error e ->
            let e = match e with :? AggregateException as a when a.InnerExceptions.Count = 1 -> a.InnerExceptions[0] | e -> e
            if not (kind.Errors |> List.exists (fun t -> t.IsInstanceOfType e)) then
                failwithf "%s: %s is not the loader's own error: %s" kind.Name (e.GetType().Name) (string e)
            if not (e.Message.Contains kind.FileName) then failwithf "%s: the error does not name the file: %s" kind.Name e.Message
            count kind "refused"
            true
        | Ok loaded ->
            if bytes = kind.Original && loaded <> original then failwithf "%s: the unchanged file loads differently" kind.Name
            if kind.Json then
                // Accepted JSON must be what a strict reader accepts, and mean what it says: when it
                // is the same JSON as the original, the load is the original's.
                let parsed = try Some(StrictJson.Parse(StrictJson.Decode(bytes, path), path)) with :? InvalidDataException -> None
                match parsed with
                | None -> failwithf "%s: loaded a file that is not strict UTF-8 JSON (a duplicate key, an invalid byte)" kind.Name
                | Some node ->
                    // The same JSON text once whitespace is gone (numbers as written: -0 is not 0 here).
                    let compact (n: JsonNode) = if isNull n then "null" else n.ToJsonString()
                    let same = compact node = compact (StrictJson.Parse(Encoding.UTF8.GetString kind.Original, "original"))
                    if same && loaded <> original then failwithf "%s: the same JSON loaded differently" kind.Name
            elif kind.Name = "safetensors" then
                match independentSafetensors bytes with
                | None -> failwithf "safetensors: loaded a file whose header does not tile its data"
                | Some expected -> if expected <> loaded then failwithf "safetensors: loaded\n%s\nbut the file says\n%s" loaded expected
            count kind (if loaded = original then "loaded the original" else "loaded a change")
            true
    finally
        Directory.Delete(dir, true)

let private kindNames = [ "safetensors"; "task file"; "orders.json"; "importance profile"; "tokenizer.model"; "config.json"; "adapter_config.json" ]

let private fuzz (name: string) =
    testPropertyWithConfig (PropertyConfig.config 500) $"{name}: a corrupted file loads faithfully or fails with the loader's own error, naming it" <|
        Prop.forAll (Arb.fromGen genCase) (fun case ->
            let kind = kinds.Value |> List.find (fun k -> k.Name = name)
            check kind (apply kind case))

let private reached =
    test "every kind saw corrupted files refused and corrupted files loaded" {
        for name in kindNames do
            let n outcome = match outcomes.TryGetValue((name, outcome)) with | true, v -> v | _ -> 0
            printfn "fuzz %-20s refused %3d, loaded unchanged %3d, loaded a change %3d" name (n "refused") (n "loaded the original") (n "loaded a change")
            Expect.isGreaterThan (n "refused") 30 $"{name}: corruptions refused"
            Expect.isGreaterThan (n "loaded the original" + n "loaded a change") 0 $"{name}: some corruptions load (whitespace, a value in range)"
    }

[<Tests>]
let tests = testSequenced <| testList "fuzzed loaders" (List.map fuzz kindNames @ [ reached ])
