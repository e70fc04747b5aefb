namespace Klf.Pipelines

/// The plain strategies, which protect nothing: sequential full fine-tuning, one LoRA adapter through the sequence, and joint training (MTL, the upper bound).
[<RequireQualifiedAccess>]
module Plain =
    let private plain = StrategyRun.plain

    /// Sequential full fine-tuning: each task trains all weights, nothing protects earlier tasks.
    let seqFT : Strategy = { Name = "seqft"; Start = fun _ -> plain }

    /// One LoRA adapter trained through the whole sequence.
    let seqLoraWith (lora: LoraSettings) : Strategy =
        { Name = "seqlora"
          Start = fun model ->
            LoraAdapter.applyWith (LoraSettings.config model "default" lora) model |> ignore
            plain }

    /// One LoRA adapter of rank r (α = 2r, dropout 0.05, on q and v) trained through the whole sequence.
    let seqLora (r: int) : Strategy = seqLoraWith (LoraSettings.ofRank r)

    /// MTL, the upper bound: full fine-tuning once on the union of every task's training examples
    /// with the step budget of the whole sequence (T × the per-task steps; the cheaper variant: one
    /// joint training at the last task, not one per prefix). Every row of
    /// the matrix holds the joint model's scores (a_{j,i} = a_{T,i} for i ≤ j), so AP is the
    /// upper bound, BWT and F.Ra are 0 by construction and FWT compares joint with single-task
    /// training; only AP (and FWT) are meaningful.
    let mtl : Strategy = { Name = "mtl"; Start = fun _ -> { plain with Joint = true } }
