namespace Klf.Pipelines

open System
open System.IO
open System.Text.Json

/// One instance of a text-to-text task: the model reads Input and must produce Output. Choices are the
/// candidate answers of a classification task (its label set, in a fixed order; `Task.withChoices`), which
/// encoder-only models score; empty for free generation and for examples read from a file.
type Example =
    { Id: string
      Input: string
      Output: string
      Choices: string[] }

/// Building examples.
[<RequireQualifiedAccess>]
module Example =
    /// An example without choices.
    let create (id: string) (input: string) (output: string) : Example = { Id = id; Input = input; Output = output; Choices = [||] }

/// Reading the examples of one task file, in any of the three supported formats, detected per file:
/// - `.json`: a JSON array of `{id?, input, output}` objects (the Long Sequence / SuperNI layout);
/// - `.json`: a JSON array of `{id?, instruction, input?, output}` objects (the instruction variant);
/// - `.jsonl`: one such object (either shape) per line; blank lines are skipped;
/// - either of them gzip-compressed (`.json.gz`, `.jsonl.gz`), read transparently.
/// The shape is decided per object: an object with an `instruction` field is the instruction
/// variant, and its Input is `instruction + "\n" + input` (just `instruction` when `input` is
/// missing or empty). A missing `id` becomes `<task>_<index>` (index from 0, in file order).
/// String and number fields are read as text. Every error names the file, the element (0-based,
/// for `.json`) or line (1-based, for `.jsonl`), and the problem.
[<RequireQualifiedAccess>]
module TaskFile =

    /// The file extensions a task file may have, in the order they are looked for.
    let extensions = [ ".json"; ".jsonl"; ".json.gz"; ".jsonl.gz" ]

    /// The bytes of a task file, decompressed when it ends in `.gz`; a broken archive names the file.
    let readBytes (file: string) : byte[] =
        if file.EndsWith(".gz", StringComparison.OrdinalIgnoreCase) then
            try
                use input = File.OpenRead file
                use gz = new Compression.GZipStream(input, Compression.CompressionMode.Decompress)
                use out = new MemoryStream()
                gz.CopyTo out
                out.ToArray()
            with :? InvalidDataException as e -> raise (InvalidDataException($"{file}: not a valid gzip file ({e.Message})"))
        else File.ReadAllBytes file

    /// The task name of a file: its name without `.json`, `.jsonl` and `.gz`.
    let taskName (file: string) : string =
        let name = Path.GetFileName file
        let strip (ext: string) (n: string) = if n.EndsWith(ext, StringComparison.OrdinalIgnoreCase) then n.Substring(0, n.Length - ext.Length) else n
        name |> strip ".gz" |> strip ".jsonl" |> strip ".json"

    /// The Input of an instruction-variant object: the instruction, then a newline and the input
    /// when the input is not empty.
    let joinInstruction (instruction: string) (input: string) =
        if String.IsNullOrEmpty input then instruction else instruction + "\n" + input

    let private text (file: string) (where: string) (e: JsonElement) (name: string) : string option =
        match e.TryGetProperty name with
        | true, v when v.ValueKind = JsonValueKind.String -> Some(v.GetString())
        | true, v when v.ValueKind = JsonValueKind.Number -> Some(v.GetRawText())
        | true, v when v.ValueKind = JsonValueKind.Null -> None
        | true, v ->
            raise (InvalidDataException($"{file}: {where}: field \"{name}\" must be a string, not {v.ValueKind}"))
        | _ -> None

    let private required file where e name =
        match text file where e name with
        | Some s -> s
        | None -> raise (InvalidDataException($"{file}: {where}: missing string field \"{name}\""))

    /// Reads one JSON object as an example. `where` names the element or line in errors;
    /// `defaultId` is used when the object has no `id`.
    let private example (file: string) (where: string) (defaultId: string) (e: JsonElement) : Example =
        if e.ValueKind <> JsonValueKind.Object then
            raise (InvalidDataException($"{file}: {where}: expected an object {{id, input, output}} or {{instruction, input, output}}, found {e.ValueKind}"))
        let id =
            match e.TryGetProperty "id" with
            | true, v when v.ValueKind = JsonValueKind.String -> v.GetString()
            | true, v when v.ValueKind <> JsonValueKind.Null -> v.GetRawText()
            | _ -> defaultId
        let input =
            match text file where e "instruction" with
            | Some instruction -> joinInstruction instruction (defaultArg (text file where e "input") "")
            | None -> required file where e "input"
        Example.create id input (required file where e "output")

    /// Loads every example of a task file (`.json` array or `.jsonl`), in file order.
    let load (file: string) : Example[] =
        if not (File.Exists file) then
            raise (FileNotFoundException($"{file}: task file not found", file))
        let task = taskName file
        let text = Klf.Formats.StrictJson.Decode(readBytes file, file)
        if file.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase) || file.EndsWith(".jsonl.gz", StringComparison.OrdinalIgnoreCase) then
            text.Split('\n')
            |> Array.map (fun l -> l.TrimEnd('\r'))
            |> Array.mapi (fun i line -> i + 1, line)
            |> Array.filter (fun (_, line) -> not (String.IsNullOrWhiteSpace line))
            |> Array.mapi (fun index (lineNo, line) ->
                let where = $"line {lineNo}"
                use doc =
                    try JsonDocument.Parse(line, Klf.Formats.StrictJson.DocumentOptions)
                    with :? JsonException as e -> raise (InvalidDataException($"{file}: {where}: not valid JSON ({e.Message})"))
                example file where $"{task}_{index}" doc.RootElement)
        else
            use doc =
                try JsonDocument.Parse(text, Klf.Formats.StrictJson.DocumentOptions)
                with :? JsonException as e -> raise (InvalidDataException($"{file}: not valid JSON ({e.Message})"))
            if doc.RootElement.ValueKind <> JsonValueKind.Array then
                raise (InvalidDataException($"{file}: expected a JSON array of {{id, input, output}} or {{instruction, input, output}} objects, found {doc.RootElement.ValueKind}"))
            doc.RootElement.EnumerateArray()
            |> Seq.mapi (fun i e -> example file $"element {i}" $"{task}_{i}" e)
            |> Array.ofSeq
