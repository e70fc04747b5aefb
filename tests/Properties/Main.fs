module Main
open Expecto
[<EntryPoint>]
let main argv = runTestsInAssemblyWithCLIArgs [] argv
