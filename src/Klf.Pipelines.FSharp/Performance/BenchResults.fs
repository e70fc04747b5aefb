namespace Klf.Pipelines

/// The machine and versions a benchmark ran on.
type BenchMachine =
    { Cpu: string
      Cores: int
      Threads: int
      Os: string
      Runtime: string
      TorchSharp: string }

/// libtorch's fp32 matrix-multiply peak, measured first in the same process.
type MatmulPeak =
    { /// The square size that gave the best rate.
      Size: int
      Gflops: float }

/// One training step (forward, backward, clipping, AdamW) of a model on synthetic sequences.
type TrainBench =
    { Model: string
      Parameters: int64
      Trainable: int64
      Batch: int
      SeqLen: int
      /// Label positions per sequence (the loss and the head run there only).
      Labels: int
      StepMs: float
      TokensPerSecond: float
      /// FLOPs of one step as `TrainingFlops.llamaStep` counts them.
      FlopsPerStep: float
      Gflops: float
      /// Gflops ÷ the matmul peak of the same run.
      Mfu: float }

/// Step time with the KIF importance tracker attached ÷ without, measured alternately in repeats.
type ImportanceBench =
    { Training: string
      PlainMs: float
      TrackedMs: float
      /// The median of the repeats' ratios.
      Ratio: float
      /// Each repeat's ratio (median tracked ÷ median plain over its pairs).
      Ratios: float list
      /// The tracker's own time per step, inside its hook.
      HookMs: float }

/// One fusion rule on one model and unit kind, against a plain copy of the same tensors.
type FusionBench =
    { Rule: string
      Units: string
      /// The base of task vectors: "previous" (θ̄_{k−1}, KIF's default) or "pre-trained" (a separate θ_0, `keep-baseline`).
      Base: string
      UnitCount: int
      Slices: int
      Bytes: int64
      FuseMs: float
      CopyMs: float
      BytesPerSecond: float
      CopyBytesPerSecond: float
      /// Fusion bytes/s ÷ copy bytes/s.
      Ratio: float
      /// The same fusion in plain PyTorch (`pytorch_fusion.py`), median ms; NaN when PyTorch did not run.
      TorchFuseMs: float
      /// PyTorch's copy_ time ÷ its fusion time, measured in its own process.
      TorchRatio: float
      /// Klf's fusion time ÷ PyTorch's (below 1: Klf is faster).
      KlfOverTorch: float }

/// Greedy decoding with and without the KV cache.
type GenerationBench =
    { Model: string
      Batch: int
      Prompt: int
      NewTokens: int
      CacheMs: float
      NoCacheMs: float
      CacheTokensPerSecond: float
      NoCacheTokensPerSecond: float
      /// Time without the cache ÷ time with it.
      Speedup: float
      /// The same decoding in PyTorch (`pytorch_generate.py`, KV cache grown by torch.cat), best ms; NaN when PyTorch did not run.
      TorchCacheMs: float
      TorchNoCacheMs: float
      TorchCacheTokensPerSecond: float
      TorchNoCacheTokensPerSecond: float
      /// Klf's time ÷ PyTorch's, with the cache and without it (below 1: Klf is faster).
      KlfOverTorchCache: float
      KlfOverTorchNoCache: float }

/// Peak and end-of-task resident memory of a continual run, task by task.
type MemoryBench =
    { Strategy: string
      Model: string
      Tasks: string list
      /// The peak resident memory during each task (training and evaluation), in bytes.
      PeakBytes: int64 list
      /// The resident memory after each task, in bytes.
      ResidentBytes: int64 list }

/// LoRA training over a frozen base in float32 or held in bfloat16 (`LowPrecisionBase`).
type LowPrecisionBench =
    { Model: string
      /// "float32" or "bfloat16": the dtype of the frozen base's matrices.
      Base: string
      /// Bytes of the frozen parameters and of the trainable (adapter) ones.
      FrozenBytes: int64
      TrainableBytes: int64
      /// Peak resident memory while building the model and training, in bytes.
      PeakBytes: int64
      StepMs: float
      /// The loss after the last step.
      Loss: float }

/// The same training step in PyTorch, when a Python with torch is present.
type PyTorchBench =
    { Available: bool
      /// Why it was skipped, or what ran.
      Message: string
      Python: string
      TorchVersion: string
      /// The BLAS library the Python process loaded.
      Blas: string
      Threads: int
      Model: string
      TorchStepMs: float
      KlfStepMs: float
      /// Klf's step time ÷ PyTorch's (below 1: Klf is faster).
      Ratio: float }

/// Everything one `klf bench` measured (sections not run are empty).
type BenchResults =
    { Machine: BenchMachine
      Matmul: MatmulPeak option
      Train: TrainBench list
      Importance: ImportanceBench list
      Fusion: FusionBench list
      Generation: GenerationBench list
      Memory: MemoryBench list
      LowPrecision: LowPrecisionBench list
      /// The training-step comparison (the `pytorch` section).
      PyTorch: PyTorchBench option
      /// What PyTorch's fusion figures are ("ran: …") or why they are absent ("skipped: …"); None when the fusion section did not run.
      TorchFusion: string option
      /// As `TorchFusion`, for greedy decoding.
      TorchGeneration: string option
      Seconds: float }
