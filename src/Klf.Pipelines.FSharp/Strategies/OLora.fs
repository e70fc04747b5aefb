namespace Klf.Pipelines

open System
open Klf.Models
open Klf.Tokenizers
open Klf.Training
open Klf.Adapters
open Klf.SkillUnits
open Klf.Kif
open TorchSharp

/// The O-LoRA orthogonality penalty.
[<RequireQualifiedAccess>]
module OLora =
    /// Reference λ1 of O-LoRA.
    [<Literal>]
    let DefaultLambda = 0.5

    /// λ1 · Σ_modules Σ_prev Σ |A_prev A_curᵀ| (sum of the absolute values of the r_prev × r_cur
    /// entries) over every module carrying the `current` adapter, against each adapter of
    /// `previous` on the same module. A differentiable scalar (gradients reach A_cur); the caller
    /// owns it (inside a step, the step's dispose scope frees it). Zero when `previous` is empty.
    let penalty (lambda: float) (lora: LoraModel) (current: string) (previous: string list) : torch.Tensor =
        use scope = torch.NewDisposeScope()
        let mutable total : torch.Tensor = null
        for m in lora.ModulesOf current do
            let aCur = m.LoraA current
            for prev in previous do
                if m.HasAdapter prev then
                    let term = (m.LoraA(prev).matmul(aCur.t())).abs().sum()
                    total <- if isNull total then term else total.add term
        let result =
            if isNull total then torch.zeros([||], dtype = torch.float32)
            else total.mul(Scalar.op_Implicit lambda)
        result.MoveToOuterDisposeScope()
