#!/bin/bash
# Build the drover "tiny real test OS": a busybox root filesystem that, once
# deployed and booted, prints who it is, checks its own files and powers off.
#
#   qemu-tests/testos/build.sh OUTDIR NAME VERSION
#
# Produces in OUTDIR:
#   root/        the root filesystem tree (what an image's root partition holds)
#   root.tar     that tree as a tar (GNU tar, sorted, numeric owners, mtime 0)
#   root.ext4    that tree as an ext4 filesystem image, label drover-root
#   esp/         the ESP contents (systemd-boot, syslinux.cfg, kernel, initrd)
#   esp.img      the 64 MiB FAT32 ESP image, syslinux installed in it
#   bios-mbr.bin the 440 bytes of BIOS boot code for LBA0 (syslinux gptmbr.bin)
#   disk.img     a whole GPT disk: p1 = ESP (EF00, legacy-BIOS-bootable),
#                p2 = ext4 root; boots under UEFI (systemd-boot) and BIOS
#                (gptmbr + syslinux)
#   layout.json  partition facts for the image importer
#   initrd/      the initramfs tree (kept for debugging)
#
# No loop devices, no mounts; needs root (for chown/mknod). Packages:
# busybox-static systemd-boot-efi syslinux syslinux-common mtools dosfstools
# e2fsprogs gdisk linux-image-amd64 cpio.
#
# Environment knobs:
#   KERNEL_RELEASE     kernel to use (default: newest /boot/vmlinuz-* with modules)
#   SOURCE_DATE_EPOCH  mtime for every file (default 0)
#   TESTOS_PAD_MIB     extra MiB of incompressible data in the root fs (default 0)
#   TESTOS_CMDLINE_EXTRA  extra kernel options, put before console=ttyS0
set -euo pipefail

usage() { echo "usage: $0 OUTDIR NAME VERSION" >&2; exit 2; }
[ $# -eq 3 ] || usage
OUT=$1 NAME=$2 VERSION=$3
for v in "$NAME" "$VERSION"; do
    [[ $v =~ ^[A-Za-z0-9][A-Za-z0-9._+-]*$ ]] ||
        { echo "error: NAME/VERSION must match [A-Za-z0-9][A-Za-z0-9._+-]*: '$v'" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "error: must run as root (chown, mknod)" >&2; exit 1; }

t_start=$EPOCHREALTIME
export LC_ALL=C TZ=UTC
SDE=${SOURCE_DATE_EPOCH:-0}
export SOURCE_DATE_EPOCH=$SDE
PAD_MIB=${TESTOS_PAD_MIB:-0}
CMDLINE_EXTRA=${TESTOS_CMDLINE_EXTRA:-}

BUSYBOX=/bin/busybox
SDBOOT=/usr/lib/systemd/boot/efi/systemd-bootx64.efi
GPTMBR=/usr/lib/syslinux/mbr/gptmbr.bin
ESP_MIB=64
ESP_START_LBA=2048 # 1 MiB
ROOT_LABEL=drover-root
ESP_TYPE=C12A7328-F81F-11D2-BA4B-00A0C93EC93B
ROOT_TYPE=0FC63DAF-8483-4772-8E79-3D69D8477DE4

need() { command -v "$1" >/dev/null || { echo "error: $1 not found (package $2)" >&2; exit 1; }; }
need mke2fs e2fsprogs; need mkfs.fat dosfstools; need mcopy mtools; need mmd mtools
need syslinux syslinux; need sgdisk gdisk; need cpio cpio; need gzip gzip; need perl perl-base
for f in "$BUSYBOX:busybox-static" "$SDBOOT:systemd-boot-efi" "$GPTMBR:syslinux-common"; do
    [ -f "${f%%:*}" ] || { echo "error: ${f%%:*} missing (package ${f##*:})" >&2; exit 1; }
done
file -L "$BUSYBOX" 2>/dev/null | grep -q dynamically && { echo "error: $BUSYBOX is not static" >&2; exit 1; }

if [ -z "${KERNEL_RELEASE:-}" ]; then
    KERNEL_RELEASE=$(for k in /boot/vmlinuz-*; do r=${k#/boot/vmlinuz-}
        [ -f "/lib/modules/$r/modules.dep" ] && echo "$r"; done | sort -V | tail -n1)
fi
KVER=$KERNEL_RELEASE
KERNEL=/boot/vmlinuz-$KVER
MODDIR=/lib/modules/$KVER
[ -n "$KVER" ] && [ -f "$KERNEL" ] && [ -f "$MODDIR/modules.dep" ] ||
    { echo "error: no kernel with modules (install linux-image-amd64)" >&2; exit 1; }

# Deterministic GUIDs derived from the image identity.
guid() { local h; h=$(printf '%s' "drover-testos $NAME $VERSION $1" | sha256sum)
    echo "${h:0:8}-${h:8:4}-4${h:13:3}-8${h:17:3}-${h:20:12}" | tr a-f A-F; }

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
rm -rf "$OUT/root" "$OUT/esp" "$OUT/initrd" "$OUT"/{root.tar,root.ext4,esp.img,disk.img,bios-mbr.bin,initrd.img,layout.json}
R=$OUT/root I=$OUT/initrd E=$OUT/esp

# Install busybox + relative symlinks for all its applets under DIR.
# $2: applets to skip (space separated paths).
install_busybox() {
    local dir=$1 skip=" $2 " p d s i up
    install -D -m 0755 "$BUSYBOX" "$dir/bin/busybox"
    while read -r p; do
        case "$p" in bin/busybox|linuxrc) continue ;; esac
        case "$skip" in *" $p "*) continue ;; esac
        [ -e "$dir/$p" ] || [ -L "$dir/$p" ] && continue
        d=${p%/*}
        [ -d "$dir/$d" ] || mkdir -p "$dir/$d"
        up=..; s=${d//[^\/]/}; for ((i = 0; i < ${#s}; i++)); do up=$up/..; done
        ln -s "$up/bin/busybox" "$dir/$p"
    done < <("$BUSYBOX" --list-full | sort)
}

#####################################################################
# 1. root filesystem
#####################################################################
mkdir -p "$R"/{dev,proc,sys,tmp,run,mnt,root,etc/drover-test,srv/drover-test,usr/local/bin,home/user}
chmod 1777 "$R/tmp"; chmod 0700 "$R/root"
install_busybox "$R" "sbin/init"

cat > "$R/sbin/init" <<'EOF'
#!/bin/sh
# drover test OS init: say who we are, check our files, power off.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
[ -e /dev/null ] || mount -t devtmpfs devtmpfs /dev 2>/dev/null
[ -e /proc/self ] || mount -t proc proc /proc
[ -d /sys/kernel ] || mount -t sysfs sysfs /sys
exec </dev/console >/dev/console 2>&1

# /dev/console is the last console= on the command line; say everything on
# ttyS0 as well when that is not already it.
also_serial=
active=$(cat /sys/class/tty/console/active 2>/dev/null)
case " $active" in *" ttyS0") ;; *) [ -c /dev/ttyS0 ] && also_serial=1 ;; esac
say() {
    echo "DROVER-TEST-OS $*"
    [ -n "$also_serial" ] && echo "DROVER-TEST-OS $*" >/dev/ttyS0 2>/dev/null
}

say "$(cat /etc/drover-test/id)"

set -f
root=none
for arg in $(cat /proc/cmdline); do
    case "$arg" in root=*) root=${arg#root=} ;; esac
done
set +f
say "root=$root"
rootdev=? rootfs=? rootopts=?
while read -r d m t o _; do
    [ "$m" = / ] && rootdev=$d rootfs=$t rootopts=${o%%,*}
done </proc/mounts
say "rootdev=$rootdev fstype=$rootfs mode=$rootopts"
if [ -d /sys/firmware/efi ]; then say firmware=uefi; else say firmware=bios; fi

if out=$(cd / && sha256sum -c /etc/drover-test/files.sha256 2>&1); then
    say files=ok
else
    echo "$out" | grep -v ': OK$'
    say files=BAD
fi

# Extraction fidelity: modes, owners, link counts, symlink target, hardlink.
meta_ok=1
exp=$(cat /etc/drover-test/meta.expected)
got=$(cd / && stat -c '%n %a %u %g %h %F' $(cut -d' ' -f1 /etc/drover-test/meta.expected) 2>&1)
if [ "$got" != "$exp" ]; then meta_ok=0; echo "meta expected:"; echo "$exp"; echo "meta got:"; echo "$got"; fi
[ "$(readlink /etc/drover-test/hello-symlink)" = hello.txt ] || { meta_ok=0; echo "symlink target wrong"; }
[ "$(stat -c %i /etc/drover-test/hello.txt)" = "$(stat -c %i /etc/drover-test/hello-hardlink)" ] ||
    { meta_ok=0; echo "hardlink is not a hardlink"; }
if [ $meta_ok = 1 ]; then say meta=ok; else say meta=BAD; fi

say poweroff
sync
poweroff -f
sleep 5
echo o >/proc/sysrq-trigger
EOF
chmod 0755 "$R/sbin/init"
cp -p "$R/sbin/init" "$R/init"

printf 'image=%s version=%s\n' "$NAME" "$VERSION" > "$R/etc/drover-test/id"
cat > "$R/etc/os-release" <<EOF
NAME="Drover test OS"
ID=drover-testos
IMAGE_ID=$NAME
IMAGE_VERSION=$VERSION
PRETTY_NAME="Drover test OS $NAME $VERSION"
EOF
printf 'hello from drover test OS %s %s\n' "$NAME" "$VERSION" > "$R/etc/drover-test/hello.txt"
ln -s hello.txt "$R/etc/drover-test/hello-symlink"
ln "$R/etc/drover-test/hello.txt" "$R/etc/drover-test/hello-hardlink"
printf 'private to uid 1000 (%s %s)\n' "$NAME" "$VERSION" > "$R/home/user/private.txt"
chown 1000:1000 "$R/home/user" "$R/home/user/private.txt"
chmod 0750 "$R/home/user"; chmod 0600 "$R/home/user/private.txt"
printf '#!/bin/sh\necho setuid marker\n' > "$R/usr/local/bin/setuid-marker"
chmod 4755 "$R/usr/local/bin/setuid-marker"
printf 'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n' > "$R/etc/passwd"
printf 'root:x:0:\nuser:x:1000:\n' > "$R/etc/group"
# Deterministic incompressible data (perl's srand/rand are drand48: stable).
gen_random() { perl -e 'srand($ARGV[1]); my $n = $ARGV[0];
    while ($n > 0) { my $c = $n < 65536 ? $n : 65536;
        print pack("L*", map { int(rand(4294967296)) } 1 .. $c / 4); $n -= $c; }' "$1" "$2"; }
gen_random $((1024 * 1024)) 1 > "$R/srv/drover-test/random.bin"
if [ "$PAD_MIB" -gt 0 ]; then gen_random $((PAD_MIB * 1024 * 1024)) 2 > "$R/srv/drover-test/pad.bin"; fi

(cd "$R" && "$BUSYBOX" stat -c '%n %a %u %g %h %F' \
    etc/drover-test/hello.txt etc/drover-test/hello-hardlink etc/drover-test/hello-symlink \
    home/user home/user/private.txt usr/local/bin/setuid-marker tmp root sbin/init) \
    > "$R/etc/drover-test/meta.expected"
(cd "$R" && find bin/busybox init sbin/init etc/os-release etc/passwd etc/group \
    etc/drover-test/id etc/drover-test/hello.txt etc/drover-test/hello-hardlink \
    etc/drover-test/meta.expected home/user/private.txt usr/local/bin/setuid-marker \
    srv/drover-test -type f | sort | xargs sha256sum) > "$R/etc/drover-test/files.sha256"

find "$R" -exec touch -h -d "@$SDE" {} +

tar --sort=name --numeric-owner --mtime="@$SDE" --format=gnu -C "$R" -cf "$OUT/root.tar" .

#####################################################################
# 2. initramfs: busybox + disk/ext4 modules + /init that mounts the root
#####################################################################
mkdir -p "$I"/{dev,proc,sys,newroot,tmp,etc}
install_busybox "$I" ""
rm -f "$I/sbin/init" "$I/init"
mknod -m 0600 "$I/dev/console" c 5 1
mknod -m 0666 "$I/dev/null" c 1 3

# Modules in dependency order (depth-first over modules.dep).
WANT_MODULES="crc16 crc32c_generic mbcache jbd2 ext4
    virtio_pci virtio_blk virtio_scsi
    nvme
    scsi_common scsi_mod sd_mod libata libahci ahci"
declare -A DEP=() BYNAME=() SEEN=()
while IFS= read -r line; do
    mod=${line%%:*}; deps=${line#*:}
    DEP[$mod]=$deps
    n=${mod##*/}; n=${n%.ko}; BYNAME[${n//-/_}]=$mod
done < "$MODDIR/modules.dep"
ORDER=()
visit() {
    local m=$1 d
    [ -n "${SEEN[$m]:-}" ] && return
    SEEN[$m]=1
    for d in ${DEP[$m]}; do visit "$d"; done
    ORDER+=("$m")
}
for n in $WANT_MODULES; do
    m=${BYNAME[$n]:-}
    [ -n "$m" ] || { echo "error: module $n not in $MODDIR/modules.dep" >&2; exit 1; }
    visit "$m"
done
: > "$I/etc/modules.order"
for m in "${ORDER[@]}"; do
    case "$m" in *.ko) ;; *) echo "error: compressed module $m: unsupported" >&2; exit 1 ;; esac
    install -D -m 0644 "$MODDIR/$m" "$I/lib/modules/$KVER/$m"
    echo "$m" >> "$I/etc/modules.order"
done
# crc32c_generic must be loaded before ext4 (ext4 only asks the crypto API
# for "crc32c"; nothing in modules.dep says so).
crc_line=$(grep -n '/crc32c_generic.ko$' "$I/etc/modules.order" | cut -d: -f1)
ext4_line=$(grep -n '/ext4.ko$' "$I/etc/modules.order" | cut -d: -f1)
[ "$crc_line" -lt "$ext4_line" ] ||
    { echo "error: module order puts ext4 before crc32c_generic" >&2; exit 1; }
echo "$KVER" > "$I/etc/kernel-release"

cat > "$I/init" <<'EOF'
#!/bin/sh
# drover test OS initramfs: load disk + ext4 modules, mount root=, switch_root.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
say() { echo "DROVER-TEST-OS $*"; }
say stage=initrd
debug=
fail() {
    say "stage=initrd error=$*"
    if [ -n "$debug" ]; then echo "drover.debug: dropping to a shell"; exec sh; fi
    sleep 2
    poweroff -f
}

root= fstype= mode=ro init=/sbin/init wait=20
set -f
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        root=*) root=${arg#root=} ;;
        rootfstype=*) fstype=${arg#rootfstype=} ;;
        init=*) init=${arg#init=} ;;
        rw) mode=rw ;;
        ro) mode=ro ;;
        drover.rootwait=*) wait=${arg#drover.rootwait=} ;;
        drover.debug) debug=1 ;;
    esac
done
set +f
[ -n "$root" ] || fail "no root= on the kernel command line"

kver=$(uname -r)
[ "$kver" = "$(cat /etc/kernel-release)" ] ||
    echo "warning: kernel $kver, initrd modules for $(cat /etc/kernel-release)"
while read -r m; do
    out=$(insmod "/lib/modules/$kver/$m" 2>&1) || case "$out" in
        *exists*) ;;
        *) echo "warning: insmod $m: $out" ;;
    esac
done </etc/modules.order

dev=
read -r up _ </proc/uptime
deadline=$(( ${up%.*} + wait ))
while :; do
    case "$root" in
        LABEL=*|UUID=*) dev=$(findfs "$root" 2>/dev/null) ;;
        /dev/*) [ -b "$root" ] && dev=$root ;;
        *) fail "unsupported root=$root (use LABEL=, UUID= or /dev/...)" ;;
    esac
    [ -n "$dev" ] && break
    read -r up _ </proc/uptime
    if [ "${up%.*}" -ge "$deadline" ]; then
        echo "block devices:"; cat /proc/partitions
        fail "root device $root not found after ${wait}s"
    fi
    usleep 100000
done
say "stage=initrd root=$root dev=$dev"

if [ -n "$fstype" ]; then
    mount -t "$fstype" -o "$mode" "$dev" /newroot || fail "mount -t $fstype $dev failed"
else
    mount -o "$mode" "$dev" /newroot || fail "mount $dev failed"
fi
[ -x "/newroot$init" ] || [ -L "/newroot$init" ] || fail "no $init on $dev"

for d in dev proc sys; do
    if [ -d "/newroot/$d" ]; then mount --move "/$d" "/newroot/$d"; else umount "/$d"; fi
done
exec switch_root /newroot "$init"
EOF
chmod 0755 "$I/init"
find "$I" -exec touch -h -d "@$SDE" {} +
(cd "$I" && find . -mindepth 1 | sort | cpio --quiet -o -H newc -R 0:0 --reproducible) |
    gzip -n -9 > "$OUT/initrd.img"
touch -d "@$SDE" "$OUT/initrd.img"

#####################################################################
# 3. ESP tree: systemd-boot (UEFI), syslinux config (BIOS), kernel, initrd
#####################################################################
CMDLINE="root=LABEL=$ROOT_LABEL rootfstype=ext4 ro panic=-1 ${CMDLINE_EXTRA:+$CMDLINE_EXTRA }console=ttyS0"
mkdir -p "$E/EFI/BOOT" "$E/loader/entries" "$E/syslinux"
install -m 0644 "$SDBOOT" "$E/EFI/BOOT/BOOTX64.EFI"
install -m 0644 "$KERNEL" "$E/vmlinuz"
mv "$OUT/initrd.img" "$E/initrd.img"
printf 'default drover.conf\ntimeout 0\neditor no\nconsole-mode keep\n' > "$E/loader/loader.conf"
cat > "$E/loader/entries/drover.conf" <<EOF
title   Drover test OS $NAME $VERSION
version $VERSION
linux   /vmlinuz
initrd  /initrd.img
options $CMDLINE
EOF
cat > "$E/syslinux/syslinux.cfg" <<EOF
SERIAL 0 115200
DEFAULT drover
PROMPT 0
TIMEOUT 0
LABEL drover
  LINUX /vmlinuz
  INITRD /initrd.img
  APPEND $CMDLINE
EOF
find "$E" -exec touch -h -d "@$SDE" {} +

# FAT cannot hold dates before 1980.
FAT_EPOCH=$(( SDE < 315532800 ? 315532800 : SDE ))
truncate -s "${ESP_MIB}M" "$OUT/esp.img"
mkfs.fat -F 32 -s 1 -S 512 -n ESP -h "$ESP_START_LBA" --invariant \
    -i "$(printf '%s' "$NAME $VERSION esp" | sha256sum | cut -c1-8)" "$OUT/esp.img" >/dev/null
(
    export MTOOLS_SKIP_CHECK=1
    cd "$E"
    # mcopy -m keeps mtimes; set them to a FAT-representable fixed time.
    tmpE=$(mktemp -d); trap 'rm -rf "$tmpE"' EXIT
    cp -a . "$tmpE/"; find "$tmpE" -exec touch -h -d "@$FAT_EPOCH" {} +
    mcopy -i "$OUT/esp.img" -s -m -Q -D o "$tmpE"/* ::/
)
syslinux --install --directory /syslinux "$OUT/esp.img"
# The mtools installer only rewrites the primary boot sector: refresh the
# FAT32 backup copy (its sector number is at BPB offset 50) to match.
bk=$(od -An -tu2 -j50 -N2 "$OUT/esp.img" | tr -d ' ')
[ "$bk" -gt 0 ] && dd if="$OUT/esp.img" of="$OUT/esp.img" bs=512 count=1 seek="$bk" conv=notrunc status=none
fsck.fat -n "$OUT/esp.img" >/dev/null 2>&1 || { fsck.fat -n "$OUT/esp.img"; exit 1; }
mdir -i "$OUT/esp.img" -/ :: >/dev/null

#####################################################################
# 4. root.ext4, disk.img, layout.json
#####################################################################
content_kib=$(du -sk --apparent-size "$R" | cut -f1)
files=$(find "$R" | wc -l)
root_mib=$(( (content_kib + files * 4 + content_kib / 2 + 16 * 1024 + 1023) / 1024 ))
ROOT_UUID=$(guid root-fs | tr A-F a-f)
FAKE_TIME=$(( SDE > 0 ? SDE : 1 ))
E2FSPROGS_FAKE_TIME=$FAKE_TIME mke2fs -q -F -t ext4 -b 4096 -L "$ROOT_LABEL" -U "$ROOT_UUID" \
    -E "root_owner=0:0,hash_seed=$(guid root-hash | tr A-F a-f)" \
    -d "$R" "$OUT/root.ext4" "${root_mib}M" >/dev/null
# mke2fs -d copies atime and ctime from the build tree (ctime is always
# "now" there): pin them so root.ext4 is reproducible.
(cd "$R" && find . | sort | sed -e 's|^\.||' -e 's|^$|/|' |
    awk -v t="@$SDE" '{ printf "sif \"%s\" ctime %s\nsif \"%s\" atime %s\n", $0, t, $0, t }') > "$OUT/.debugfs.cmds"
E2FSPROGS_FAKE_TIME=$FAKE_TIME debugfs -w -f "$OUT/.debugfs.cmds" "$OUT/root.ext4" >/dev/null 2>"$OUT/.debugfs.err" ||
    { cat "$OUT/.debugfs.err" >&2; exit 1; }
grep -v '^debugfs ' "$OUT/.debugfs.err" >&2 && { echo "error: debugfs complained" >&2; exit 1; }
rm -f "$OUT/.debugfs.cmds" "$OUT/.debugfs.err"
e2fsck -fn "$OUT/root.ext4" >/dev/null 2>&1 || { e2fsck -fn "$OUT/root.ext4"; exit 1; }

dd if="$GPTMBR" of="$OUT/bios-mbr.bin" bs=440 count=1 status=none
esp_bytes=$((ESP_MIB * 1024 * 1024))
root_bytes=$(stat -c %s "$OUT/root.ext4")
root_start_lba=$((ESP_START_LBA + esp_bytes / 512))
disk_bytes=$((ESP_START_LBA * 512 + esp_bytes + root_bytes + 1024 * 1024))
truncate -s "$disk_bytes" "$OUT/disk.img"
sgdisk -o -U "$(guid disk)" \
    -n "1:$ESP_START_LBA:$((ESP_START_LBA + esp_bytes / 512 - 1))" -t 1:EF00 -c 1:ESP -A 1:set:2 -u "1:$(guid esp)" \
    -n "2:$root_start_lba:$((root_start_lba + root_bytes / 512 - 1))" -t 2:8300 -c "2:$ROOT_LABEL" -u "2:$(guid root)" \
    "$OUT/disk.img" >/dev/null
# sgdisk exits 0 even when it ignored something: check what it wrote.
sgdisk -v "$OUT/disk.img" | grep -q 'No problems found' || { sgdisk -v "$OUT/disk.img"; exit 1; }
check_part() { # N TYPE START SIZE ATTRS NAME
    local info; info=$(sgdisk -i "$1" "$OUT/disk.img")
    grep -q "Partition GUID code: $2 " <<<"$info" &&
    grep -q "First sector: $3 " <<<"$info" &&
    grep -q "Partition size: $4 sectors" <<<"$info" &&
    grep -q "Attribute flags: $5" <<<"$info" &&
    grep -q "Partition name: '$6'" <<<"$info" ||
        { echo "error: partition $1 is not as intended:" >&2; echo "$info" >&2; exit 1; }
}
check_part 1 "$ESP_TYPE" "$ESP_START_LBA" $((esp_bytes / 512)) 0000000000000004 ESP
check_part 2 "$ROOT_TYPE" "$root_start_lba" $((root_bytes / 512)) 0000000000000000 "$ROOT_LABEL"
dd if="$OUT/bios-mbr.bin" of="$OUT/disk.img" bs=440 count=1 conv=notrunc status=none
dd if="$OUT/esp.img" of="$OUT/disk.img" bs=1M seek=$((ESP_START_LBA * 512 / 1048576)) conv=notrunc,sparse status=none
dd if="$OUT/root.ext4" of="$OUT/disk.img" bs=1M seek=$((root_start_lba * 512 / 1048576)) conv=notrunc,sparse status=none
sgdisk -v "$OUT/disk.img" | grep -q 'No problems found' || { echo "error: GPT damaged by dd" >&2; exit 1; }

cat > "$OUT/layout.json" <<EOF
{
  "name": "$NAME",
  "version": "$VERSION",
  "kernel_release": "$KVER",
  "cmdline": "$CMDLINE",
  "disk": {"image": "disk.img", "size_bytes": $disk_bytes, "table": "gpt", "sector_size": 512},
  "esp": {"size_bytes": $esp_bytes, "start_lba": $ESP_START_LBA, "type": "$ESP_TYPE", "label": "ESP", "fs": "vfat", "attributes": ["legacy-bios-bootable"], "image": "esp.img", "dir": "esp"},
  "root": {"size_bytes": $root_bytes, "start_lba": $root_start_lba, "type": "$ROOT_TYPE", "label": "$ROOT_LABEL", "fs": "ext4", "fs_label": "$ROOT_LABEL", "fs_uuid": "$ROOT_UUID", "image": "root.ext4", "tar": "root.tar", "dir": "root"},
  "bios_mbr_code": "bios-mbr.bin",
  "bios_boot": "LBA0 bytes 0-439 = bios_mbr_code; on the ESP: syslinux --install --directory /syslinux (syslinux/syslinux.cfg is in esp/)",
  "bios_mbr_code_source": "$GPTMBR"
}
EOF
for f in "$OUT"/{root.tar,root.ext4,esp.img,disk.img,bios-mbr.bin,layout.json} "$E/initrd.img" "$E/vmlinuz"; do
    touch -d "@$SDE" "$f"
done

t_end=$EPOCHREALTIME
echo "drover test OS '$NAME' '$VERSION' (kernel $KVER) in $OUT:"
for f in root.tar root.ext4 esp.img disk.img esp/vmlinuz esp/initrd.img bios-mbr.bin layout.json; do
    printf '  %-16s %12d bytes  %6s MiB allocated\n' "$f" "$(stat -c %s "$OUT/$f")" \
        "$(( $(stat -c %b "$OUT/$f") * 512 / 1048576 ))"
done
printf '  root/            %d entries, %s KiB\n' "$files" "$content_kib"
awk -v a="$t_start" -v b="$t_end" 'BEGIN { printf "built in %.1f s\n", b - a }'
