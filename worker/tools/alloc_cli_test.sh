#!/bin/sh
# End-to-end check of kvtier-tracegen and kvtier-profile: trace -> profiles ->
# table -> allocations whose totals are exact; bad input fails cleanly.
# usage: alloc_cli_test.sh <dir with kvtier-tracegen and kvtier-profile>
set -eu
bin="$1"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

for seed in 1 2; do
  "$bin/kvtier-tracegen" --out="$tmp/t$seed.kvt" --layers=3 --q_heads=4 \
    --kv_heads=2 --head_dim=32 --prompt_len=512 --needle_margin=64 \
    --steps=4 --seed=$seed
done
cmp -s "$tmp/t1.kvt" "$tmp/t2.kvt" && fail "seeds gave identical traces"
"$bin/kvtier-tracegen" --out="$tmp/again.kvt" --layers=3 --q_heads=4 \
  --kv_heads=2 --head_dim=32 --prompt_len=512 --needle_margin=64 --steps=4 \
  --seed=1
cmp "$tmp/t1.kvt" "$tmp/again.kvt" || fail "same seed, different bytes"

"$bin/kvtier-profile" xkv --trace="$tmp/t1.kvt,$tmp/t2.kvt" --out="$tmp/x.prof"
"$bin/kvtier-profile" lukv --trace="$tmp/t1.kvt,$tmp/t2.kvt" --out="$tmp/l.prof"
"$bin/kvtier-profile" lukv-table --profile="$tmp/l.prof" --out="$tmp/l.table"
grep -q '^samples 2\|samples 2 ' "$tmp/x.prof" || fail "xkv profile lacks 2 samples"

out=$("$bin/kvtier-profile" allocate --layers=3 --kv_heads=2 --total=300 \
  --xkv="$tmp/x.prof")
[ "$(echo "$out" | tail -1)" = "total 300" ] || fail "xkv total: $out"
[ "$(echo "$out" | grep -c '^layer ')" = 3 ] || fail "xkv lines: $out"
out=$("$bin/kvtier-profile" allocate --layers=3 --kv_heads=2 --total=700 \
  --context=512 --lukv_table="$tmp/l.table")
[ "$(echo "$out" | tail -1)" = "total 700" ] || fail "lukv total: $out"
[ "$(echo "$out" | grep -c '^layer .* head ')" = 6 ] || fail "lukv lines"

# Errors exit non-zero with a message and write nothing.
if "$bin/kvtier-profile" xkv --trace="$tmp/missing.kvt" --out="$tmp/y.prof" \
    2>"$tmp/err"; then fail "missing trace accepted"; fi
grep -q NOT_FOUND "$tmp/err" || fail "no NOT_FOUND: $(cat "$tmp/err")"
[ ! -e "$tmp/y.prof" ] || fail "profile written on error"
head -c 1000 "$tmp/t1.kvt" > "$tmp/cut.kvt"
if "$bin/kvtier-profile" xkv --trace="$tmp/cut.kvt" --out="$tmp/y.prof" \
    2>"$tmp/err"; then fail "truncated trace accepted"; fi
grep -q DATA_LOSS "$tmp/err" || fail "no DATA_LOSS: $(cat "$tmp/err")"
if "$bin/kvtier-tracegen" --out="$tmp/z.kvt" --head_dim=8 2>/dev/null; then
  fail "bad tracegen options accepted"
fi
[ ! -e "$tmp/z.kvt" ] || fail "trace written on error"
echo PASS
