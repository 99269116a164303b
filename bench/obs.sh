#!/usr/bin/env bash
# `atelier obs cp` against `rclone copy` (default settings), both against the same S3 server
# on loopback (s3s-fs, as the tests use), in one run: 1 x 1 GiB and 1000 x 100 KiB, upload
# and download. Rounds alternate which tool goes first; every copy goes to a fresh prefix or
# directory. Prints a table (MB/s, the median of the rounds) and writes it to
# bench/results/obs-STAMP.txt. Results go to docs/benchmarks.md by hand.
#
#   bash bench/obs.sh            # ROUNDS=3 by default; SKIP_BUILD=1 to use the existing binary
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/scripts/lib.sh"
ROUNDS="${ROUNDS:-3}"

cd "$ROOT"
[ "${SKIP_BUILD:-}" = 1 ] || cargo build --release -q -p atelier-gateway --bin atelier
atelier="$CARGO_TARGET_DIR/release/atelier"
need_debs rclone
s3s="$(s3s_fs_bin)"

work="$(mktemp -d)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/store/bkt" "$work/data/big" "$work/data/small"
"$s3s" --host 127.0.0.1 --port "$port" --access-key AKBENCH --secret-key SKBENCH "$work/store" \
  >"$work/s3s.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $port))" 2>/dev/null && break
  sleep 0.1
done

log "writing 1 x 1 GiB and 1000 x 100 KiB of random data"
head -c $((1024 * 1024 * 1024)) /dev/urandom >"$work/data/big/one.bin"
python3 - "$work/data/small" <<'EOF'
import os, sys
for i in range(1000):
    with open(os.path.join(sys.argv[1], f"f{i:04d}.bin"), "wb") as f:
        f.write(os.urandom(100 * 1024))
EOF

export AWS_ACCESS_KEY_ID=AKBENCH AWS_SECRET_ACCESS_KEY=SKBENCH AWS_ENDPOINT_URL="http://127.0.0.1:$port"
export AWS_SHARED_CREDENTIALS_FILE=/nonexistent AWS_CONFIG_FILE=/nonexistent
# rclone's S3 client (aws-sdk-go) fails on a custom CA bundle with its own transport; the
# server is plain HTTP on loopback anyway.
unset AWS_CA_BUNDLE
export RCLONE_CONFIG_BENCH_TYPE=s3 RCLONE_CONFIG_BENCH_PROVIDER=Other \
  RCLONE_CONFIG_BENCH_ACCESS_KEY_ID=AKBENCH RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY=SKBENCH \
  RCLONE_CONFIG_BENCH_ENDPOINT="http://127.0.0.1:$port" RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE=true \
  RCLONE_CONFIG=/dev/null

# seconds TOOL DIRECTION DATASET ROUND: one timed copy to a fresh place.
seconds() {
  local tool=$1 dir=$2 set=$3 r=$4 t0 t1
  local prefix="$tool-$set-$r" local_out="$work/out/$tool-$set-$r"
  t0=$(date +%s.%N)
  case "$tool/$dir" in
    atelier/up) "$atelier" obs cp -d "$work/data/$set/" "obs://bkt/$prefix/" >/dev/null 2>&1 ;;
    rclone/up) rclone copy -q "$work/data/$set" "bench:bkt/$prefix" ;;
    atelier/down) "$atelier" obs cp -d "obs://bkt/$tool-$set-up/" "$local_out/" >/dev/null 2>&1 ;;
    # From the bucket's root with a filter: with a prefix as its root, rclone first HEADs the
    # prefix's name to see whether it is a file, and s3s-fs answers that (a folder on its
    # disk) with a 500 after about 40 s, twice: a server quirk, not rclone's speed.
    rclone/down) rclone copy -q --include "/$tool-$set-up/**" "bench:bkt" "$local_out" ;;
  esac
  t1=$(date +%s.%N)
  python3 -c "print(round($t1 - $t0, 3))"
}

bytes_of() { du -sb "$work/data/$1" | cut -f1; }
declare -A times
for set in big small; do
  # The objects each tool downloads: uploaded once, by that tool.
  "$atelier" obs cp -d "$work/data/$set/" "obs://bkt/atelier-$set-up/" >/dev/null 2>&1
  rclone copy -q "$work/data/$set" "bench:bkt/rclone-$set-up"
  for r in $(seq "$ROUNDS"); do
    order="atelier rclone"
    [ $((r % 2)) = 0 ] && order="rclone atelier"
    for dir in up down; do
      for tool in $order; do
        s=$(seconds "$tool" "$dir" "$set" "$r")
        times[$tool/$dir/$set]+="$s "
        log "$set $dir $tool round $r: ${s}s"
        # Free the disk between rounds.
        rm -rf "$work/out" "$work/store/bkt/$tool-$set-$r"
      done
    done
  done
done

mkdir -p "$ROOT/bench/results"
out="$ROOT/bench/results/obs-$(date -u +%Y%m%dT%H%M%SZ).txt"
{
  echo "commit $(git -C "$ROOT" rev-parse --short HEAD), $(nproc) CPUs, rounds $ROUNDS, $(rclone version | head -1)"
  printf '%-28s %12s %12s\n' "copy" "atelier MB/s" "rclone MB/s"
  for set in big small; do
    b=$(bytes_of "$set")
    for dir in up down; do
      row=()
      for tool in atelier rclone; do
        med=$(printf '%s\n' ${times[$tool/$dir/$set]} | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
        row+=("$(python3 -c "print(f'{$b / $med / 1e6:.1f}')")")
      done
      label="$([ "$set" = big ] && echo "1 x 1 GiB" || echo "1000 x 100 KiB") $dir"
      printf '%-28s %12s %12s\n' "$label" "${row[0]}" "${row[1]}"
    done
  done
} | tee "$out"
