#!/bin/bash
# Boot a test OS disk built by build.sh under QEMU (TCG) with several
# firmware/disk-controller combinations and check what it prints.
#
#   qemu-tests/testos/check.sh OUTDIR [NAME VERSION]
#
# NAME and VERSION default to those in OUTDIR/layout.json. The disk image is
# never modified (snapshot=on: writes go to a temporary overlay).
#
# Environment:
#   CHECK_CASES    space-separated cases (default: bios-virtio uefi-nvme uefi-virtio bios-nvme)
#                  available: {bios,uefi}-{virtio,nvme,ahci}
#   CHECK_TIMEOUT  seconds per boot (default 120)
#   CHECK_DISK     disk image to boot (default OUTDIR/disk.img)
#   OVMF_CODE / OVMF_VARS  firmware files (default /usr/share/OVMF/OVMF_{CODE,VARS}_4M.fd)
# Serial logs (each line prefixed with seconds since QEMU start) go to
# OUTDIR/check/CASE.log.
set -euo pipefail

[ $# -eq 1 ] || [ $# -eq 3 ] || { echo "usage: $0 OUTDIR [NAME VERSION]" >&2; exit 2; }
OUT=$(cd "$1" && pwd)
json_str() { sed -n "s/^  \"$1\": \"\\([^\"]*\\)\",\$/\\1/p" "$OUT/layout.json"; }
NAME=${2:-$(json_str name)}
VERSION=${3:-$(json_str version)}
[ -n "$NAME" ] && [ -n "$VERSION" ] || { echo "error: no name/version in $OUT/layout.json" >&2; exit 2; }
DISK=${CHECK_DISK:-$OUT/disk.img}
CASES=${CHECK_CASES:-bios-virtio uefi-nvme uefi-virtio bios-nvme}
TIMEOUT=${CHECK_TIMEOUT:-120}
OVMF_CODE=${OVMF_CODE:-/usr/share/OVMF/OVMF_CODE_4M.fd}
OVMF_VARS=${OVMF_VARS:-/usr/share/OVMF/OVMF_VARS_4M.fd}
QEMU=${QEMU:-qemu-system-x86_64}
[ -f "$DISK" ] || { echo "error: $DISK missing" >&2; exit 1; }
command -v "$QEMU" >/dev/null || { echo "error: $QEMU missing (package qemu-system-x86)" >&2; exit 1; }

LOGDIR=$OUT/check
mkdir -p "$LOGDIR"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# Prefix each line with the seconds since $1.
stamp() {
    local t0=${1/./} line dt
    while IFS= read -r line || [ -n "$line" ]; do
        dt=$(( ${EPOCHREALTIME/./} - t0 ))
        printf '%3d.%02d %s\n' $((dt / 1000000)) $((dt % 1000000 / 10000)) "${line//$'\r'/}"
    done
}

failures=0
results=()
for case in $CASES; do
    fw=${case%%-*} bus=${case#*-}
    args=(-accel tcg -m 512 -smp 1 -display none -serial stdio -no-reboot -nic none)
    case "$fw" in
        bios) ;;
        uefi)
            [ -f "$OVMF_CODE" ] && [ -f "$OVMF_VARS" ] || { echo "error: OVMF missing (package ovmf)" >&2; exit 1; }
            cp "$OVMF_VARS" "$TMP/vars-$case.fd"
            args+=(-drive "if=pflash,format=raw,unit=0,readonly=on,file=$OVMF_CODE"
                   -drive "if=pflash,format=raw,unit=1,file=$TMP/vars-$case.fd") ;;
        *) echo "error: unknown firmware in case $case" >&2; exit 2 ;;
    esac
    drive="if=none,id=d0,file=$DISK,format=raw,snapshot=on"
    case "$bus" in
        virtio) args+=(-drive "$drive" -device virtio-blk-pci,drive=d0); dev=/dev/vda2 ;;
        nvme)   args+=(-drive "$drive" -device nvme,drive=d0,serial=drover0); dev=/dev/nvme0n1p2 ;;
        ahci)   args+=(-drive "$drive" -device ahci,id=ahci0 -device ide-hd,drive=d0,bus=ahci0.0); dev=/dev/sda2 ;;
        *) echo "error: unknown disk bus in case $case" >&2; exit 2 ;;
    esac

    log=$LOGDIR/$case.log
    echo "== $case: $QEMU ${args[*]}"
    t0=$EPOCHREALTIME
    set +e
    timeout "$TIMEOUT" "$QEMU" "${args[@]}" </dev/null 2>&1 | stamp "$t0" > "$log"
    rc=${PIPESTATUS[0]}
    set -e
    wall=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    at() { grep -m1 -F "$1" "$log" | awk '{ print $1 }' || true; }
    t_initrd=$(at 'DROVER-TEST-OS stage=initrd')
    t_os=$(at "DROVER-TEST-OS image=$NAME version=$VERSION")

    problems=()
    [ "$rc" = 124 ] && problems+=("timed out after ${TIMEOUT}s")
    [ "$rc" != 124 ] && [ "$rc" != 0 ] && problems+=("qemu exit status $rc")
    for want in "DROVER-TEST-OS image=$NAME version=$VERSION" \
                "DROVER-TEST-OS root=LABEL=drover-root" \
                "DROVER-TEST-OS rootdev=$dev fstype=ext4" \
                "DROVER-TEST-OS firmware=$fw" \
                "DROVER-TEST-OS files=ok" \
                "DROVER-TEST-OS meta=ok" \
                "DROVER-TEST-OS poweroff"; do
        grep -qF "$want" "$log" || problems+=("missing '$want'")
    done
    if [ ${#problems[@]} -eq 0 ]; then
        status=PASS
    else
        status=FAIL
        failures=$((failures + 1))
        echo "-- $case serial log (last 40 lines of $log):"
        tail -n 40 "$log"
        for p in "${problems[@]}"; do echo "-- $case: $p"; done
    fi
    grep -F 'DROVER-TEST-OS' "$log" | sed 's/^/   /' || true
    line=$(printf '%-12s %s  wall %5ss  initrd at %5ss  test OS at %5ss' \
        "$case" "$status" "$wall" "${t_initrd:--}" "${t_os:--}")
    echo "$line"
    results+=("$line")
done

echo "== summary ($DISK, image=$NAME version=$VERSION)"
printf '%s\n' "${results[@]}"
[ "$failures" = 0 ] || { echo "$failures case(s) failed" >&2; exit 1; }
