#!/usr/bin/env bash
# Single-node deploy benchmark: import, agent deploy over loopback HTTP, and
# baselines (cat, dd, curl) measured in the same run.
#
#   BENCH_MIB=256      size of the raw test image in MiB
#   BENCH_TAR=1        also run the ext4 dir/tar variant (0 to skip)
#   BENCH_TAR_FILES=3000  number of small files in the tar variant
#   BENCH_TMPDIR=/var/tmp where the scratch directory goes (disk-backed)
#   BENCH_BIN=target/release  where drover-server and drover-agent live
#
# MB = 10^6 bytes everywhere (as the agent's own log lines).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MIB=${BENCH_MIB:-256}
TAR=${BENCH_TAR:-1}
TAR_FILES=${BENCH_TAR_FILES:-3000}
BIN=${BENCH_BIN:-$ROOT/target/release}
SERVER=$BIN/drover-server
AGENT=$BIN/drover-agent
RESULTS=$ROOT/bench/results
CSV=$RESULTS/single.csv

[[ $MIB =~ ^[0-9]+$ && $MIB -ge 8 ]] || { echo "BENCH_MIB must be an integer >= 8" >&2; exit 2; }
for b in "$SERVER" "$AGENT"; do
    [[ -x $b ]] || { echo "missing $b: cargo build --release -p drover-server -p drover-agent" >&2; exit 2; }
done
command -v openssl >/dev/null || { echo "openssl is needed for the seeded random data" >&2; exit 2; }

WORK=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/drover-bench.XXXXXX")
SERVER_PID=
cleanup() {
    if [[ -n $SERVER_PID ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- cache dropping ---------------------------------------------------------
DROP=no
if [[ $(id -u) -eq 0 ]] && sync && (echo 3 > /proc/sys/vm/drop_caches) 2>/dev/null; then
    DROP=yes
fi
drop() { if [[ $DROP == yes ]]; then sync; echo 3 > /proc/sys/vm/drop_caches; fi; }

now() { date +%s.%N; }
# secs START END
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
# mbps BYTES SECS
mbps() { awk -v n="$1" -v s="$2" 'BEGIN { if (s < 0.001) s = 0.001; printf "%.1f", n / 1e6 / s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b < 0.001) b = 0.001; printf "%.2f", a / b }'; }
fsize() { stat -c %s "$1"; }

ROWS=()   # "step|secs|bytes|unit|note"
row() { ROWS+=("$1|$2|$3|$4|$5"); }

# ---- test data ----------------------------------------------------------------
# Half seeded pseudo-random bytes (incompressible), a quarter text (seq lines,
# compressible), a quarter zeros; interleaved in 4 MiB pieces so that each chunk
# type shows up throughout the image rather than in one block.
echo "bench: scratch $WORK, image ${MIB} MiB, drop_caches=$DROP"
RAW=$WORK/raw.img
# cut_bytes FILE OFFSET COUNT: append COUNT bytes of FILE from OFFSET to $RAW
cut_bytes() {
    dd if="$1" bs=1M iflag=skip_bytes,count_bytes skip="$2" count="$3" status=none >>"$RAW"
}
gen_raw() {
    local total=$((MIB * 1048576)) piece=$((4 * 1048576)) done=0 i=0
    # (|| true: the generators die of SIGPIPE when head has enough, which pipefail would report)
    { openssl enc -aes-256-ctr -pass pass:drover-bench -nosalt -pbkdf2 -iter 1 \
        </dev/zero 2>/dev/null || true; } | head -c $((total / 2 + piece)) >"$WORK/rand.bin"
    { seq 1 100000000 || true; } | head -c $((total / 4 + piece)) >"$WORK/text.bin"
    local ro=0 to=0
    : >"$RAW"
    while ((done < total)); do
        local n=$piece
        ((total - done < n)) && n=$((total - done))
        case $((i % 4)) in
            0|2) cut_bytes "$WORK/rand.bin" "$ro" "$n"; ro=$((ro + n)) ;;
            1) cut_bytes "$WORK/text.bin" "$to" "$n"; to=$((to + n)) ;;
            3) cut_bytes /dev/zero 0 "$n" ;;
        esac
        done=$((done + n)); i=$((i + 1))
    done
    rm -f "$WORK/rand.bin" "$WORK/text.bin"
}
gen_raw
RAW_BYTES=$(fsize "$RAW")

"$SERVER" key generate --out "$WORK/keys" >/dev/null
STORE=$WORK/store

# ---- (1) import -----------------------------------------------------------------
drop
t0=$(now)
"$SERVER" image import --store "$STORE" --name bench --version raw --key "$WORK/keys/drover.key" \
    --partition "label=root,type=linux,size=rest,fs=none,content=raw:$RAW" >"$WORK/import.log" 2>&1 \
    || { cat "$WORK/import.log" >&2; exit 1; }
t1=$(now)
IMPORT_S=$(elapsed "$t0" "$t1")
PAYLOAD=$STORE/bench/raw/payload
PAY_BYTES=$(fsize "$PAYLOAD")
row "import raw" "$IMPORT_S" "$RAW_BYTES" uncompressed ""

# ---- server -----------------------------------------------------------------------
free_port() {
    local p
    for _ in $(seq 50); do
        p=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
    done
    echo "no free port" >&2; return 1
}
PORT=$(free_port)
URL=http://127.0.0.1:$PORT
echo dummy >"$WORK/vmlinuz"; echo dummy >"$WORK/initrd"
cat >"$WORK/server.toml" <<EOF
listen = "127.0.0.1:$PORT"
public_url = "$URL"
kernel = "$WORK/vmlinuz"
initrd = "$WORK/initrd"
kernel_args = "console=ttyS0"
store = "$STORE"

[deploy]
image = "bench"
EOF
"$SERVER" serve --config "$WORK/server.toml" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; exit 1; }
    sleep 0.1
done
if command -v curl >/dev/null; then
    curl -sf "$URL/healthz" >/dev/null || { echo "server /healthz failed" >&2; cat "$WORK/server.log" >&2; exit 1; }
fi

DISK_BYTES=$((RAW_BYTES + 64 * 1048576))
new_disk() { rm -f "$WORK/disk.img"; truncate -s "$DISK_BYTES" "$WORK/disk.img"; }

# ---- (2) agent deploy --------------------------------------------------------------
# run_agent VERSION LABEL BYTES
run_agent() {
    new_disk
    drop
    local t0 t1
    t0=$(now)
    "$AGENT" run --cmdline "deploy.server=$URL deploy.image=bench@$1 deploy.wipe=yes" \
        --disk "$WORK/disk.img" --key "$WORK/keys/drover.pub" >"$WORK/agent-$1.log" 2>&1 \
        || { cat "$WORK/agent-$1.log" >&2; return 1; }
    t1=$(now)
    AGENT_S=$(elapsed "$t0" "$t1")
    row "$2" "$AGENT_S" "$3" uncompressed "wall clock incl. fetch+verify+inflate+write+fsync"
}
run_agent raw "agent deploy raw" "$RAW_BYTES"
AGENT_RAW_S=$AGENT_S
AGENT_LINES=$(grep -E 'MB/s|deployed' "$WORK/agent-raw.log" || true)

# ---- (3) baselines -------------------------------------------------------------------
drop
t0=$(now); cat "$PAYLOAD" >/dev/null; t1=$(now)
CAT_S=$(elapsed "$t0" "$t1")
row "cat payload >/dev/null" "$CAT_S" "$PAY_BYTES" compressed "reads the compressed payload"

new_disk
drop
t0=$(now); dd if="$RAW" of="$WORK/disk.img" bs=4M conv=fsync,notrunc status=none; t1=$(now)
DD_S=$(elapsed "$t0" "$t1")
row "dd raw -> disk (fsync)" "$DD_S" "$RAW_BYTES" uncompressed "plain write of the uncompressed image"

CURL_S=
if command -v curl >/dev/null; then
    drop
    t0=$(now); curl -sf -o /dev/null "$URL/images/bench/raw/payload"; t1=$(now)
    CURL_S=$(elapsed "$t0" "$t1")
    row "curl payload (HTTP)" "$CURL_S" "$PAY_BYTES" compressed "plain HTTP transfer of the payload"
else
    echo "bench: curl not found, skipping the HTTP baseline"
fi

# ---- tar variant (ext4, content=dir) --------------------------------------------------
TAR_NOTE=
if [[ $TAR == 1 ]]; then
    TREE=$WORK/tree
    mkdir -p "$TREE"
    # Deterministic tree: TAR_FILES small text files (0.5-16 KiB) in 50 dirs.
    awk -v n="$TAR_FILES" -v root="$TREE" 'BEGIN {
        srand(42)
        for (d = 0; d < 50; d++) system("mkdir -p " root "/d" d)
        for (i = 0; i < n; i++) {
            f = root "/d" (i % 50) "/f" i ".txt"
            sz = 512 + int(rand() * 16384); s = ""
            while (length(s) < sz) s = s sprintf("line %d of file %d value %d\n", length(s), i, int(rand() * 1e9))
            printf "%s", substr(s, 1, sz) > f; close(f)
        }
    }'
    TREE_BYTES=$(du -sb --apparent-size "$TREE" | cut -f1)
    TREE_MIB=$(((TREE_BYTES / 1048576) * 2 + 64))
    drop
    t0=$(now)
    if "$SERVER" image import --store "$STORE" --name bench --version tree --key "$WORK/keys/drover.key" \
        --partition "label=root,type=linux,size=${TREE_MIB}M,fs=ext4,content=dir:$TREE" >"$WORK/import-tree.log" 2>&1; then
        t1=$(now)
        row "import dir ($TAR_FILES files)" "$(elapsed "$t0" "$t1")" "$TREE_BYTES" "file bytes" ""
        TREE_PAY=$(fsize "$STORE/bench/tree/payload")
        SAVE_DISK=$DISK_BYTES
        DISK_BYTES=$(((TREE_MIB + 16) * 1048576))
        if run_agent tree "agent deploy dir/ext4" "$TREE_BYTES"; then
            ROWS[-1]="agent deploy dir/ext4|$AGENT_S|$TREE_BYTES|file bytes|mkfs.ext4 + extract"
            TAR_NOTE="tar variant: $TAR_FILES files, $TREE_BYTES file bytes, payload $TREE_PAY bytes, ${TREE_MIB} MiB partition"
        else
            TAR_NOTE="tar variant: agent deploy FAILED (see above)"
        fi
        DISK_BYTES=$SAVE_DISK
    else
        cat "$WORK/import-tree.log" >&2
        TAR_NOTE="tar variant: import FAILED (see above)"
    fi
fi

# ---- report ----------------------------------------------------------------------------
mkdir -p "$RESULTS"
[[ -f $RESULTS/.gitignore ]] || printf '*.csv\n' >"$RESULTS/.gitignore"
echo
echo "raw image: $RAW_BYTES bytes ($MIB MiB: 1/2 seeded random, 1/4 text, 1/4 zeros)"
echo "payload:   $PAY_BYTES bytes (ratio $(ratio "$PAY_BYTES" "$RAW_BYTES") of uncompressed)"
echo "drop_caches between steps: $DROP$([[ $DROP == no ]] && echo ' (not root or /proc/sys read-only: page cache stays warm)')"
[[ -n $TAR_NOTE ]] && echo "$TAR_NOTE"
echo
{
    printf '%-28s %9s %10s  %-13s %s\n' step seconds MB/s "MB/s of" note
    for r in "${ROWS[@]}"; do
        IFS='|' read -r step secs bytes unit note <<<"$r"
        printf '%-28s %9s %10s  %-13s %s\n' "$step" "$secs" "$(mbps "$bytes" "$secs")" "$unit" "$note"
    done
}
echo
echo "agent/dd   time ratio: $(ratio "$AGENT_RAW_S" "$DD_S")  (agent raw deploy vs plain dd of the uncompressed image)"
[[ -n $CURL_S ]] && echo "agent/curl time ratio: $(ratio "$AGENT_RAW_S" "$CURL_S")  (agent raw deploy vs plain HTTP transfer of the payload)"
echo "agent/cat  time ratio: $(ratio "$AGENT_RAW_S" "$CAT_S")  (agent raw deploy vs reading the payload)"
echo
echo "agent log:"
sed 's/^/  /' <<<"$AGENT_LINES"

{
    echo "timestamp,mib,drop_caches,step,seconds,bytes,unit,mb_per_s"
    ts=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    for r in "${ROWS[@]}"; do
        IFS='|' read -r step secs bytes unit note <<<"$r"
        echo "$ts,$MIB,$DROP,\"$step\",$secs,$bytes,$unit,$(mbps "$bytes" "$secs")"
    done
    echo "$ts,$MIB,$DROP,\"payload size\",,$PAY_BYTES,compressed,"
    echo "$ts,$MIB,$DROP,\"ratio agent/dd\",$(ratio "$AGENT_RAW_S" "$DD_S"),,,"
    [[ -n $CURL_S ]] && echo "$ts,$MIB,$DROP,\"ratio agent/curl\",$(ratio "$AGENT_RAW_S" "$CURL_S"),,,"
    true
} >"$CSV"
echo
echo "wrote $CSV"
