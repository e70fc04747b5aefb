#!/usr/bin/env bash
# Packs Klf.Core, Klf.Pipelines, Klf.Laws and Klf.Cli (version from Directory.Build.props) into the local
# feed artifacts/nuget and prints its path. Scripts and projects then use it as a package source:
#   #i "nuget: <repo>/artifacts/nuget"
#   #r "nuget: Klf.Pipelines"
# A package of the same version in the NuGet cache would shadow the new one, so that cached copy
# (of Klf's packages only) is removed first.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
version=$(sed -n 's:.*<Version>\(.*\)</Version>.*:\1:p' Directory.Build.props | head -n 1)
cache="${NUGET_PACKAGES:-$HOME/.nuget/packages}"
for id in klf.core klf.pipelines klf.laws klf.cli; do rm -rf "$cache/$id/$version"; done
mkdir -p artifacts/nuget
for p in src/Klf.Core.CSharp/Klf.Core.CSharp.csproj src/Klf.Pipelines.FSharp/Klf.Pipelines.FSharp.fsproj src/Klf.Laws.FSharp/Klf.Laws.FSharp.fsproj src/Klf.Scripts/Klf.Scripts.fsproj; do
  dotnet pack "$p" -c Release --nologo -v q -clp:ErrorsOnly "$@" >&2
done
echo "$root/artifacts/nuget"
