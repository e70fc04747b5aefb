#!/usr/bin/env bash
# Packs Klf's packages (version from Directory.Build.props) into the local feed artifacts/nuget and
# prints its path. Scripts and projects then use it as a package source:
#   #i "nuget: <repo>/artifacts/nuget"
#   #r "nuget: Klf.Pipelines"
# A package of the same version in the NuGet cache would shadow the new one, so that cached copy
# (of Klf's packages only) is removed first.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# id and project of every package, dependencies first.
packages=(
  "Klf.Tokenizers src/Klf.Tokenizers.CSharp/Klf.Tokenizers.CSharp.csproj"
  "Klf.Core src/Klf.Core.CSharp/Klf.Core.CSharp.csproj"
  "Klf.Pipelines src/Klf.Pipelines.FSharp/Klf.Pipelines.FSharp.fsproj"
  "Klf.Laws src/Klf.Laws.FSharp/Klf.Laws.FSharp.fsproj"
  "Klf.Reports src/Klf.Reports.FSharp/Klf.Reports.FSharp.fsproj"
  "Klf.Cli src/Klf.Scripts/Klf.Scripts.fsproj"
)
version=$(sed -n 's:.*<Version>\(.*\)</Version>.*:\1:p' Directory.Build.props | head -n 1)
cache="${NUGET_PACKAGES:-$HOME/.nuget/packages}"
mkdir -p artifacts/nuget
for entry in "${packages[@]}"; do
  read -r id project <<<"$entry"
  rm -rf "$cache/${id,,}/$version"
  dotnet pack "$project" -c Release --nologo -v q -clp:ErrorsOnly "$@" >&2
done
echo "$root/artifacts/nuget"
