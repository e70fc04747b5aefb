namespace Klf.Pipelines

open Klf.Models
open Klf.Training
open Klf.Kif

/// KIF for F# pipelines: a session around a model, and one call per task.
[<RequireQualifiedAccess>]
module Kif =
    /// A KIF session for a model (dispose it when the sequence ends).
    let session (options: KifOptions) (model: ILanguageModel) : KifSession = new KifSession(model, options)

    /// Trains one task inside the session — begin (snapshot, tracking), fit, end (score, fuse,
    /// accumulate) — with `configure` adding further hooks (e.g. the orthogonality term).
    let taskWith (configure: StepHooks -> unit) (session: KifSession) (name: string) (options: TrainerOptions)
                 (examples: LmExample[]) (model: ILanguageModel) : KifTaskResult =
        let hooks = session.BeginTask name
        configure hooks
        Trainer.Fit(model, examples, options, hooks) |> ignore
        session.EndTask()

    /// Trains one task inside the session (see taskWith).
    let task (session: KifSession) (name: string) (options: TrainerOptions) (examples: LmExample[]) (model: ILanguageModel) : KifTaskResult =
        taskWith ignore session name options examples model
