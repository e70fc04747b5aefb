/// The one FsCheck configuration of the property tests: every property replays from the same fixed,
/// printed seed, so a run is the same cases in every process and a failure reproduces as printed.
module PropertyConfig

open Expecto

/// FsCheck's replay seed (seed, gamma; gamma must be odd) shared by every property.
let replaySeed = (20261126UL, 0x9E3779B97F4A7C15UL)

/// `maxTest` cases per property, replayed from `replaySeed`.
let config (maxTest: int) : FsCheckConfig =
    let s, g = replaySeed
    { FsCheckConfig.defaultConfig with maxTest = maxTest; replay = Some(s, g, None) }
