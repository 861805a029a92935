#!/usr/bin/env bash
# runtime-packages.sh PROGRAM...: the Debian packages that hold the shared
# libraries the programs load (ldd), one a line. The image's runtime stage
# installs exactly these, so the only package list to maintain is
# scripts/lib.sh's. Fails when a library is missing or no package holds it.
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: $0 PROGRAM..." >&2; exit 2; }
libraries=$(for program in "$@"; do ldd "$program" || exit 1; done)
if grep -q "not found" <<<"$libraries"; then
  echo "unresolved libraries:" >&2; grep "not found" <<<"$libraries" >&2; exit 1
fi
mapfile -t libs < <(awk '$2 == "=>" && $3 ~ /^\// { print $3 }' <<<"$libraries" | sort -u)
# Packages register either the /lib or the /usr/lib spelling (merged /usr),
# so ask for every spelling, in one dpkg call (each call reads every list).
candidates=()
for lib in "${libs[@]}"; do
  candidates+=("$lib" "$(readlink -f "$lib")" "/usr$lib")
done
declare -A owner=()
while IFS= read -r line; do
  owner["${line#*: }"]="${line%%: *}"
done < <(dpkg -S "${candidates[@]}" 2>/dev/null || true)
packages=()
for lib in "${libs[@]}"; do
  found=""
  for path in "$lib" "$(readlink -f "$lib")" "/usr$lib"; do
    if [ -n "${owner[$path]:-}" ]; then found=${owner[$path]}; break; fi
  done
  [ -n "$found" ] || { echo "no Debian package holds $lib" >&2; exit 1; }
  packages+=("$found")
done
# "libfoo:amd64" and "a, b" (a path in several packages) become one name a line.
printf '%s\n' "${packages[@]}" | tr ',' '\n' | sed 's/^ *//; s/:.*//' | sort -u
