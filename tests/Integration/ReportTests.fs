/// report.md and the PNG plots of `klf run`, from a hand-made 3-task result.
module ReportTests

open System
open System.IO
open Expecto
open SkiaSharp
open Klf.Pipelines
open Klf.Reports

let private tasks = [ "dbpedia"; "amazon"; "yahoo" ]

let private results : Markdown.StrategyResult list =
    let seqft = Metrics.ofRows [| [| 90.0; nan; nan |]; [| 40.0; 80.0; nan |]; [| 20.5; 30.26; 70.0 |] |]
    let kif = Metrics.ofRows [| [| 88.0; nan; nan |]; [| 85.0; 79.0; nan |]; [| 84.0; 77.0; 71.0 |] |]
    [ { Name = "seqft"; Matrix = seqft; Summary = { AP = 40.26; FRa = 59.76; FWT = None; BWT = -59.64 } }
      { Name = "kif"; Matrix = kif; Summary = Metrics.summary (Some [| 85.0; 80.0; 70.0 |]) kif } ]

let private facts : TaskFacts list =
    [ { Name = "dbpedia"; Metric = "exact-match"; Labels = Some 14 }
      { Name = "amazon"; Metric = "exact-match"; Labels = Some 5 }
      { Name = "yahoo"; Metric = "exact-match"; Labels = Some 10 } ]

let private settings = [ "sequence", "custom: dbpedia -> amazon -> yahoo"; "seed", "1" ]

/// Decodes a PNG and returns (width, height, standard deviation of the grey levels).
let private decode (path: string) =
    let bytes = File.ReadAllBytes path
    Expect.isGreaterThan bytes.Length 8 $"{path} has content"
    Expect.sequenceEqual bytes[0..7] [| 0x89uy; 0x50uy; 0x4Euy; 0x47uy; 0x0Duy; 0x0Auy; 0x1Auy; 0x0Auy |] $"{path}: PNG signature"
    use bmp = SKBitmap.Decode bytes
    Expect.isNotNull bmp $"{path} decodes"
    let grey = [| for y in 0 .. 4 .. bmp.Height - 1 do for x in 0 .. 4 .. bmp.Width - 1 do let c = bmp.GetPixel(x, y) in float c.Red * 0.3 + float c.Green * 0.59 + float c.Blue * 0.11 |]
    let mean = Array.average grey
    bmp.Width, bmp.Height, sqrt (grey |> Array.averageBy (fun g -> (g - mean) ** 2.0))

[<Tests>]
let tests =
    testList "report" [
        test "the markdown holds the settings, each accuracy matrix (blank above the diagonal) and the metric table" {
            let md = Markdown.render settings tasks facts results [] []
            Expect.stringContains md "| seed | 1 |" "settings table"
            Expect.stringContains md "| task | metric | labels | chance |" "tasks table"
            Expect.stringContains md "| dbpedia | exact-match | 14 | 7.1 |" "dbpedia: 14 labels, chance 100/14"
            Expect.stringContains md "| amazon | exact-match | 5 | 20.0 |" "amazon"
            let stream = (100.0 / 14.0 + 20.0 + 10.0) / 3.0
            Expect.stringContains md (sprintf "Stream average chance: %.1f" stream) "the stream's average chance"
            Expect.stringContains md (sprintf "| *chance (guessing)* | %.1f |" stream) "chance next to AP"
            Expect.stringContains md "| after \\ task | dbpedia | amazon | yahoo |" "matrix header"
            Expect.stringContains md "| dbpedia | 90.0 |  |  |" "first row: blank above the diagonal"
            Expect.stringContains md "| amazon | 40.0 | 80.0 |  |" "second row"
            Expect.stringContains md "| yahoo | 20.5 | 30.3 | 70.0 |" "last row, one decimal"
            Expect.stringContains md "| yahoo | 84.0 | 77.0 | 71.0 |" "kif's last row"
            Expect.stringContains md "| strategy | AP | F.Ra | FWT | BWT |" "metric table header"
            Expect.stringContains md "| seqft | 40.3 | 59.8 | - | -59.6 |" "seqft metrics, FWT not measured"
            let k = results[1].Summary
            Expect.stringContains md (sprintf "| kif | %.1f | %.1f | %.1f | %.1f |" k.AP k.FRa k.FWT.Value k.BWT) "kif metrics"
            for f in [ "heatmap-seqft.png"; "tasks-over-time-seqft.png"; "heatmap-kif.png"; "tasks-over-time-kif.png"; "metrics.png" ] do
                Expect.stringContains md $"]({f})" $"links {f}"
            Expect.stringContains md "Not available" "importance per layer is said to be unavailable, not faked"
        }

        test "write puts report.md and valid, non-blank PNGs of the expected size beside each other, atomically" {
            let dir = Directory.CreateTempSubdirectory("klf-report-").FullName
            try
                let written = Markdown.write dir settings tasks facts results [] []
                Expect.equal (Path.GetFileName written.Head) "report.md" "report.md first"
                let names = written |> List.map Path.GetFileName |> Set.ofList
                Expect.equal names (Set.ofList [ "report.md"; "heatmap-seqft.png"; "tasks-over-time-seqft.png"; "heatmap-kif.png"; "tasks-over-time-kif.png"; "metrics.png" ]) "files"
                Expect.isEmpty (Directory.GetFiles(dir, "*.tmp")) "no temporary files left"
                for p in written.Tail do
                    let w, h, sd = decode p
                    Expect.equal (w, h) (Plots.Width, Plots.Height) $"{p}: size"
                    Expect.isGreaterThan sd 10.0 $"{p}: not blank"
            finally
                match Environment.GetEnvironmentVariable "KLF_KEEP_REPORT" with
                | null | "" -> Directory.Delete(dir, true)
                | keep -> Directory.CreateDirectory keep |> ignore; for f in Directory.GetFiles dir do File.Copy(f, Path.Combine(keep, Path.GetFileName f), true)
        }

        test "RunReport.readMetrics takes metrics.json back (null above the diagonal, FWT null or a number)" {
            let dir = Directory.CreateTempSubdirectory("klf-report-read-").FullName
            try
                let json = """{ "tasks": ["dbpedia", "amazon"], "seed": 3, "strategies": {
                      "seqft": { "matrix": [[90.0, null], [40.0, 80.0]], "AP": 60.0, "FRa": 50.0, "FWT": null, "BWT": -50.0 },
                      "kif":   { "matrix": [[88.0, null], [85.0, 79.0]], "AP": 82.0, "FRa": 3.0, "FWT": 1.5, "BWT": -3.0 } } }"""
                File.WriteAllText(Path.Combine(dir, "metrics.json"), json)
                let m = RunReport.readMetrics (Path.Combine(dir, "metrics.json"))
                let tasks, seed, fs, rs = m.Tasks, m.Seed, m.Facts, m.Results
                Expect.isEmpty fs "no task-facts in the file: none"
                Expect.equal tasks [ "dbpedia"; "amazon" ] "tasks"
                Expect.equal seed (Some 3) "seed"
                Expect.equal [ for r in rs -> r.Name ] [ "seqft"; "kif" ] "strategies in file order"
                Expect.isTrue (Double.IsNaN rs[0].Matrix[0, 1]) "null above the diagonal is NaN"
                Expect.equal rs[0].Matrix[1, 0] 40.0 "entry"
                Expect.equal rs[0].Summary.FWT None "FWT null"
                Expect.equal rs[1].Summary.FWT (Some 1.5) "FWT value"
                let md = Markdown.render [] tasks fs rs [] []
                Expect.stringContains md "| amazon | 40.0 | 80.0 |" "renders"
                Expect.isFalse (md.Contains "chance") "no chance stated when the facts are unknown"
                Expect.throwsT<InvalidDataException> (fun () -> File.WriteAllText(Path.Combine(dir, "metrics.json"), "{}"); RunReport.readMetrics (Path.Combine(dir, "metrics.json")) |> ignore) "wrong shape: clear error"
            finally
                Directory.Delete(dir, true)
        }

        test "plot scales fit the data: the heatmap's colour range and the score axis" {
            let m = results[1].Matrix
            Expect.equal (Plots.colourRange (m.ToArray2D())) (71.0, 88.0) "min and max of the measured cells"
            Expect.equal (Plots.colourRange (Array2D.create 2 2 nan)) (0.0, 100.0) "nothing measured"
            Expect.equal (Plots.colourRange (array2D [ [ 50.0; nan ]; [ 50.0; 50.0 ] ])) (49.5, 50.5) "a constant matrix gets one point"
            let lo, hi = Plots.scoreLimits [ 20.0; 30.0; 7.1 ]
            Expect.isTrue (lo >= 0.0 && lo < 7.1 && hi > 30.0 && hi < 40.0) $"fits 7.1..30 with a small pad, got {lo}..{hi}"
            Expect.equal (Plots.scoreLimits [ 98.0; 99.0 ]) (96.0, 100.0) "clipped at 100"
            let a = Plots.tasksOverTime "kif" tasks [| Some 7.1; Some 20.0; Some 10.0 |] m
            let b = Plots.tasksOverTime "kif" tasks [| None; None; None |] m
            Expect.notEqual a b "chance lines are drawn"
            Expect.notEqual (Plots.metrics (Some 12.4) [ "kif", results[1].Summary ]) (Plots.metrics None [ "kif", results[1].Summary ]) "the chance line on the metrics plot"
        }

        test "plots draw text with the embedded font (a title changes the pixels)" {
            let m = results[0].Matrix
            let a = Plots.heatmap "a" tasks m
            let b = Plots.heatmap "a-much-longer-strategy-title" tasks m
            Expect.notEqual a b "the title's glyphs are drawn"
        }
    ]
