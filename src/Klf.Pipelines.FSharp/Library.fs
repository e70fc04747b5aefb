namespace Klf.Pipelines
/// Placeholder module so the assembly builds before the pipeline layer lands.
module Version =
    /// The library version string.
    let current = "0.1.0"
