/// PNG plots of continual-learning results (ScottPlot 5 on SkiaSharp). Text is drawn with the
/// DejaVu Sans font embedded in this assembly, so plots render the same on a machine without any
/// system fonts (SkiaSharp's Linux natives would otherwise draw no glyphs there).
module Klf.Reports.Plots

open System
open System.IO
open ScottPlot
open SkiaSharp
open Klf.Checkpoints
open Klf.Formats
open Klf.Pipelines

/// The font every plot uses (registered from the embedded TTF).
let [<Literal>] FontName = "Klf DejaVu Sans"

type private EmbeddedFontResolver(data: byte[]) =
    let typeface = lazy (
        let t = SKTypeface.FromData(SKData.CreateCopy data)
        if isNull t then failwith "the embedded DejaVu Sans font could not be loaded"
        t)
    let create (name: string) =
        if String.Equals(name, FontName, StringComparison.OrdinalIgnoreCase) then typeface.Value else null
    interface IFontResolver with
        member _.CreateTypeface(name: string, _weight: FontWeight, _slant: FontSlant, _spacing: FontSpacing) = create name
        member _.CreateTypeface(name: string, _bold: bool, _italic: bool) = create name

let private registered =
    lazy (
        let asm = typeof<EmbeddedFontResolver>.Assembly
        let res = asm.GetManifestResourceNames() |> Array.find (fun n -> n.EndsWith("DejaVuSans.ttf", StringComparison.Ordinal))
        use s = asm.GetManifestResourceStream res
        use ms = new MemoryStream()
        s.CopyTo ms
        Fonts.FontResolvers.Insert(0, EmbeddedFontResolver(ms.ToArray()))
        Fonts.Default <- FontName)

let private newPlot () =
    registered.Force() |> ignore
    let plt = new Plot()
    plt.Font.Set FontName |> ignore
    plt

let private png (plt: Plot) (width: int) (height: int) =
    try plt.GetImageBytes(width, height, ImageFormat.Png)
    finally plt.Dispose()

/// Width and height in pixels of every plot.
let Width, Height = 800, 600

/// The colour range of a heatmap: the measured cells' minimum and maximum (so the scale fits the
/// data), widened to at least 1 point when they are (nearly) equal; (0, 100) when nothing is measured.
let colourRange (data: float[,]) : float * float =
    let finite = [| for v in Seq.cast<float> data do if Double.IsFinite v then yield v |]
    if finite.Length = 0 then 0.0, 100.0
    else
        let lo, hi = Array.min finite, Array.max finite
        if hi - lo < 1.0 then let mid = (lo + hi) / 2.0 in mid - 0.5, mid + 0.5 else lo, hi

/// The y-limits of a plot of scores: the data's range padded by 8 % of it (at least 2 points),
/// never below 0 or above 100 unless the data is.
let scoreLimits (values: float seq) : float * float =
    let finite = values |> Seq.filter Double.IsFinite |> Array.ofSeq
    if finite.Length = 0 then 0.0, 100.0
    else
        let lo, hi = Array.min finite, Array.max finite
        let pad = max 2.0 ((hi - lo) * 0.08)
        let bottom = if lo >= 0.0 then max 0.0 (lo - pad) else lo - pad
        let top = if hi <= 100.0 then min 100.0 (hi + pad) else hi + pad
        bottom, top

/// Accuracy matrix as a heatmap: row j = after training task j (top to bottom), column i = task i;
/// cells above the diagonal (not measured) are left blank; each measured cell shows its score.
let heatmap (strategy: string) (tasks: string list) (m: AccuracyMatrix) : byte[] =
    let plt = newPlot ()
    let t = m.Size
    let names = Array.ofList tasks
    let data = m.ToArray2D()
    // Cells as rectangles (exact edges at ±0.5 around each index); the hidden heatmap only feeds the colour bar.
    let cmap = Colormaps.Viridis()
    let hm = plt.Add.Heatmap(data)
    hm.Colormap <- cmap
    let lo, hi = colourRange data
    hm.ManualRange <- Nullable(Range(lo, hi))
    hm.IsVisible <- false
    for j in 0 .. t - 1 do
        for i in 0 .. t - 1 do
            let v = data[j, i]
            if not (Double.IsNaN v) then
                let y = float (t - 1 - j)
                let r = plt.Add.Rectangle(float i - 0.5, float i + 0.5, y - 0.5, y + 0.5)
                r.FillColor <- cmap.GetColor(Math.Clamp((v - lo) / (hi - lo), 0.0, 1.0))
                r.LineColor <- Colors.White
                r.LineWidth <- 1.0f
    for j in 0 .. t - 1 do
        for i in 0 .. t - 1 do
            let v = data[j, i]
            if not (Double.IsNaN v) then
                let txt = plt.Add.Text(v.ToString("F1", Globalization.CultureInfo.InvariantCulture), float i, float (t - 1 - j))
                txt.LabelAlignment <- Alignment.MiddleCenter
                txt.LabelFontSize <- (if t <= 8 then 16.0f else 10.0f)
                // Viridis is light at its top: dark text there, light text on the dark part.
                txt.LabelFontColor <- (if (v - lo) / (hi - lo) > 0.6 then Colors.Black else Colors.White)
    let cb = plt.Add.ColorBar(hm)
    cb.Label <- "score (%)"
    plt.Axes.Bottom.SetTicks([| for i in 0 .. t - 1 -> float i |], names)
    plt.Axes.Left.SetTicks([| for j in 0 .. t - 1 -> float (t - 1 - j) |], [| for n in names -> "after " + n |])
    plt.Axes.Bottom.Label.Text <- "task evaluated"
    plt.Axes.Left.Label.Text <- "after training"
    plt.Title($"{strategy}: accuracy matrix")
    plt.Axes.SetLimits(-0.5, float t - 0.5, -0.5, float t - 0.5)
    plt.HideGrid()
    png plt Width Height

/// Each task's score after each training stage (x = stage, from the stage the task was trained);
/// one line per task, and its chance level (when `chance` gives one, index by task) as a dashed line
/// of the same colour. The y-axis fits the scores and chance levels.
let tasksOverTime (strategy: string) (tasks: string list) (chance: float option[]) (m: AccuracyMatrix) : byte[] =
    let plt = newPlot ()
    let t = m.Size
    let names = Array.ofList tasks
    let palette = Palettes.Category10()
    for i in 0 .. t - 1 do
        let pts = [| for j in i .. t - 1 do if not (Double.IsNaN m[j, i]) then yield float (j + 1), m[j, i] |]
        if pts.Length > 0 then
            let sc = plt.Add.Scatter(Array.map fst pts, Array.map snd pts)
            sc.LegendText <- names[i]
            sc.Color <- palette.GetColor i
            sc.LineWidth <- 2.0f
            sc.MarkerSize <- 8.0f
        match (if i < chance.Length then chance[i] else None) with
        | Some c ->
            let l = plt.Add.Line(float (i + 1) - 0.3, c, float t + 0.3, c)
            l.Color <- palette.GetColor i
            l.LineWidth <- 1.5f
            l.LinePattern <- LinePattern.Dashed
        | None -> ()
    if chance |> Array.exists Option.isSome then
        let key = plt.Add.Line(0.0, nan, 0.0, nan)
        key.Color <- Colors.Gray
        key.LinePattern <- LinePattern.Dashed
        key.LegendText <- "chance (1 / labels)"
    plt.Axes.Bottom.SetTicks([| for j in 1 .. t -> float j |], [| for n in names -> "after " + n |])
    plt.Axes.Bottom.Label.Text <- "training stage"
    plt.Axes.Left.Label.Text <- "score (%)"
    let lo, hi = scoreLimits (Seq.append (Seq.cast<float> (m.ToArray2D())) (chance |> Seq.choose id))
    plt.Axes.SetLimits(0.5, float t + 0.5, lo, hi)
    plt.Title($"{strategy}: each task's score over time")
    plt.ShowLegend(Alignment.LowerLeft) |> ignore
    png plt Width Height

/// AP and BWT per strategy as grouped bars, with the stream's average chance level (the AP of
/// guessing) as a dashed line when it is known. The y-axis fits the bars and that line.
let metrics (chance: float option) (results: (string * MetricSummary) list) : byte[] =
    let plt = newPlot ()
    let rs = Array.ofList results
    let palette = Palettes.Category10()
    let series (label: string) (offset: float) (value: MetricSummary -> float) (k: int) =
        let bars = [| for s in 0 .. rs.Length - 1 -> Bar(Position = float s * 3.0 + offset, Value = value (snd rs[s]), FillColor = palette.GetColor k) |]
        let b = plt.Add.Bars(bars)
        b.LegendText <- label
        for bar in bars |> Array.filter (fun b -> Double.IsFinite b.Value) do
            let v = bar.Value
            let txt = plt.Add.Text(v.ToString("F1", Globalization.CultureInfo.InvariantCulture), bar.Position, v)
            txt.LabelAlignment <- (if v >= 0.0 then Alignment.LowerCenter else Alignment.UpperCenter)
            txt.LabelFontSize <- 13.0f
    series "AP" 0.0 (fun s -> s.AP) 0
    series "BWT" 1.0 (fun s -> s.BWT) 1
    plt.Add.HorizontalLine(0.0, 1.0f, Colors.Black) |> ignore
    match chance with
    | Some c ->
        let l = plt.Add.HorizontalLine(c, 1.5f, palette.GetColor 0)
        l.LinePattern <- LinePattern.Dashed
        l.LegendText <- sprintf "chance AP %s" (c.ToString("F1", Globalization.CultureInfo.InvariantCulture))
    | None -> ()
    plt.Axes.Bottom.SetTicks([| for s in 0 .. rs.Length - 1 -> float s * 3.0 + 0.5 |], Array.map fst rs)
    plt.Axes.Left.Label.Text <- "percent (AP) / points (BWT)"
    let finite = rs |> Array.collect (fun (_, s) -> [| s.AP; s.BWT |]) |> Array.append (Option.toArray chance) |> Array.filter Double.IsFinite
    let lo = Array.fold min 0.0 finite
    let hi = Array.fold max 0.0 finite
    let pad = max 5.0 ((hi - lo) * 0.12)
    plt.Axes.SetLimits(-1.0, float rs.Length * 3.0 - 0.5, lo - (if lo < 0.0 then pad else 0.0), hi + pad)
    plt.Title("AP and BWT per strategy")
    plt.ShowLegend(Alignment.UpperRight) |> ignore
    png plt Width Height

/// The training curves of one run: each task's per-step loss (one colour per task, the tasks one
/// after another along the x-axis), its validation losses as markers, and the step whose weights a
/// task kept as a larger marker.
let trainingCurves (title: string) (points: CurvePoint list) : byte[] =
    let plt = newPlot ()
    let byTask = points |> List.groupBy (fun p -> p.TaskIndex, p.Task) |> List.sortBy (fst >> fst)
    let palette : IPalette = if byTask.Length <= 10 then Palettes.Category10() else Palettes.Category20()
    let mutable offset = 0
    byTask |> List.iteri (fun k ((_, task), pts) ->
        let pts = pts |> List.sortBy (fun p -> p.Step) |> Array.ofList
        let x (p: CurvePoint) = float (offset + p.Step)
        let finite = pts |> Array.filter (fun p -> Double.IsFinite p.Loss)
        if finite.Length > 0 then
            let sc = plt.Add.Scatter(finite |> Array.map x, finite |> Array.map (fun p -> p.Loss))
            sc.LegendText <- task
            sc.Color <- palette.GetColor k
            sc.LineWidth <- 1.5f
            sc.MarkerSize <- 0.0f
        let v = pts |> Array.choose (fun p -> p.ValidationLoss |> Option.filter Double.IsFinite |> Option.map (fun l -> x p, l))
        if v.Length > 0 then
            let m = plt.Add.Scatter(Array.map fst v, Array.map snd v)
            m.Color <- palette.GetColor k
            m.LineWidth <- 0.0f
            m.MarkerSize <- 7.0f
            m.MarkerShape <- MarkerShape.OpenCircle
        for p in pts do
            match p.Kept, p.ValidationLoss with
            | true, Some l when Double.IsFinite l ->
                let kept = plt.Add.Marker(x p, l)
                kept.Color <- palette.GetColor k
                kept.Size <- 14.0f
                kept.Shape <- MarkerShape.FilledDiamond
            | _ -> ()
        offset <- offset + (if pts.Length = 0 then 0 else (pts |> Array.map (fun p -> p.Step) |> Array.max)))
    plt.Axes.Bottom.Label.Text <- "optimizer step (tasks one after another)"
    plt.Axes.Left.Label.Text <- "loss (nats per token); circles: validation, diamond: kept"
    plt.Title(title)
    plt.ShowLegend(Alignment.UpperRight) |> ignore
    png plt Width Height

/// A short tick label for a layer label: `model.layers.3` → `L3`, `encoder.block.1` → `enc 1`,
/// `decoder.block.0` → `dec 0`; other labels (`embeddings`, `final_norm`, `head`) unchanged.
let layerTick (layer: string) =
    let segs = layer.Split('.')
    let last = segs[segs.Length - 1]
    if segs.Length < 2 || last.Length = 0 || not (Seq.forall Char.IsAsciiDigit last) then layer
    elif segs[0] = "encoder" then "enc " + last
    elif segs[0] = "decoder" then "dec " + last
    elif segs[segs.Length - 2] = "layers" || segs[segs.Length - 2] = "h" then "L" + last
    else layer

/// Importance per layer (KIF): one line per task over the layers (mean normalised unit importance
/// Ŝ after that task) and the accumulated importance Â after the last task as a thick dashed
/// line; written to `path` as a PNG (atomically).
let importancePerLayer (path: string) (title: string) (li: LayerImportance) : unit =
    let plt = newPlot ()
    let n = li.Layers.Length
    let xs = [| for i in 0 .. n - 1 -> float i |]
    // Ten distinct hues for up to ten tasks; beyond that, twenty (paired light/dark).
    let palette : IPalette = if li.Tasks.Length <= 10 then Palettes.Category10() else Palettes.Category20()
    let line (values: float[]) (legend: string) =
        let pts = Array.zip xs values |> Array.filter (fun (_, v) -> Double.IsFinite v)
        let sc = plt.Add.Scatter(Array.map fst pts, Array.map snd pts)
        sc.LegendText <- legend
        sc
    li.Scores |> Array.iteri (fun k row ->
        let sc = line row (List.item k li.Tasks)
        sc.Color <- palette.GetColor k
        sc.LineWidth <- 2.0f
        sc.MarkerSize <- 7.0f)
    let acc = line li.Accumulated "accumulated Â"
    acc.Color <- Colors.Black
    acc.LineWidth <- 3.0f
    acc.LinePattern <- LinePattern.Dashed
    acc.MarkerSize <- 9.0f
    plt.Axes.Bottom.SetTicks(xs, [| for l in li.Layers -> layerTick l |])
    if n > 10 then
        plt.Axes.Bottom.TickLabelStyle.Rotation <- 45.0f
        plt.Axes.Bottom.TickLabelStyle.Alignment <- Alignment.MiddleLeft
        plt.Axes.Bottom.MinimumSize <- 90.0f
    plt.Axes.Bottom.Label.Text <- "layer"
    plt.Axes.Left.Label.Text <- "mean normalised unit importance"
    plt.Axes.SetLimits(-0.5, float (max 1 n) - 0.5, 0.0, 1.05)
    plt.Title(title)
    plt.ShowLegend(Edge.Right) |> ignore // outside the data area: the lines span the whole width
    let data = png plt Width Height
    AtomicFile.Write(path, fun s -> s.Write(data, 0, data.Length))
/// Pre-training loss curve: the smoothed training loss and the held-out loss against the step
/// (unmeasured points, such as the training loss before the first step, are left out).
let lossCurve (title: string) (points: PretrainPoint list) : byte[] =
    let plt = newPlot ()
    let palette = Palettes.Category10()
    let series (label: string) (k: int) (value: PretrainPoint -> float) =
        let pts = points |> List.filter (fun p -> Double.IsFinite(value p)) |> Array.ofList
        if pts.Length > 0 then
            let sc = plt.Add.Scatter(pts |> Array.map (fun p -> float p.Step), pts |> Array.map value)
            sc.LegendText <- label
            sc.Color <- palette.GetColor k
            sc.LineWidth <- 2.0f
            sc.MarkerSize <- (if pts.Length > 60 then 0.0f else 6.0f)
    series "train (moving average)" 0 (fun p -> p.TrainLoss)
    series "held-out" 1 (fun p -> p.HeldOutLoss)
    plt.Axes.Bottom.Label.Text <- "optimizer step"
    plt.Axes.Left.Label.Text <- "cross-entropy (nats per token)"
    plt.Title(title)
    plt.ShowLegend(Alignment.UpperRight) |> ignore
    png plt Width Height
