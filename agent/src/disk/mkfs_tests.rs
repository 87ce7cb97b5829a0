//! mkfs on temp files, checked with the filesystems' own fsck on the
//! partition's bytes.

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::disk::derive_uuid;

const MIB: u64 = 1 << 20;

/// Whether the system tools are installed (skip otherwise).
fn have(tool: &str) -> bool {
    let found = find_tool(Path::new("/"), &[tool]).is_ok();
    if !found {
        eprintln!("{tool} not installed: skipping");
    }
    found
}

fn disk(dir: &tempfile::TempDir, size: u64) -> PathBuf {
    let p = dir.path().join("disk.img");
    File::create(&p).unwrap().set_len(size).unwrap();
    p
}

/// The partition's bytes as a file of their own, for fsck.
fn carve(disk: &Path, t: &PartTarget) -> PathBuf {
    let data = fs::read(disk).unwrap();
    let out = disk.with_file_name("part.img");
    fs::write(&out, &data[t.offset as usize..(t.offset + t.size) as usize]).unwrap();
    out
}

/// Everything outside the partition is still zero.
fn untouched_outside(disk: &Path, t: &PartTarget) {
    let data = fs::read(disk).unwrap();
    let (a, b) = (t.offset as usize, (t.offset + t.size) as usize);
    assert!(
        data[..a].iter().all(|&x| x == 0),
        "bytes before the partition changed"
    );
    assert!(
        data[b..].iter().all(|&x| x == 0),
        "bytes after the partition changed"
    );
}

fn tool_output(prog: &str, args: &[&str], file: &Path) -> (bool, String) {
    let out = Command::new(prog).args(args).arg(file).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn ext4_at_an_offset() {
    if !have("mke2fs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = disk(&dir, 64 * MIB);
    let t = PartTarget {
        path: img.clone(),
        offset: 3 * MIB,
        size: 40 * MIB,
    };
    let uuid = derive_uuid(b"seed", "fs2");
    mkfs(
        Path::new("/"),
        &t,
        &FsSpec {
            kind: FsKind::Ext4,
            label: "root",
            uuid,
        },
    )
    .unwrap();
    untouched_outside(&img, &t);
    let part = carve(&img, &t);
    let (ok, out) = tool_output("e2fsck", &["-fn"], &part);
    assert!(ok, "{out}");
    let (_, out) = tool_output("dumpe2fs", &["-h"], &part);
    assert!(out.contains("Filesystem volume name:   root"), "{out}");
    assert!(
        out.contains(&format!("Filesystem UUID:          {uuid}")),
        "{out}"
    );
    // 40 MiB: the size argument kept it inside the partition.
    let bs: u64 = field(&out, "Block size:").parse().unwrap();
    let blocks: u64 = field(&out, "Block count:").parse().unwrap();
    assert_eq!(bs * blocks, 40 * MIB);
}

fn field<'a>(text: &'a str, name: &str) -> &'a str {
    let line = text.lines().find(|l| l.starts_with(name)).unwrap();
    line[name.len()..].trim()
}

#[test]
fn ext4_on_a_partition_file() {
    if !have("mke2fs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = disk(&dir, 16 * MIB);
    let t = PartTarget {
        path: img.clone(),
        offset: 0,
        size: 16 * MIB,
    };
    let spec = FsSpec {
        kind: FsKind::Ext4,
        label: "data",
        uuid: derive_uuid(b"s", "fs1"),
    };
    mkfs(Path::new("/"), &t, &spec).unwrap();
    let (ok, out) = tool_output("e2fsck", &["-fn"], &img);
    assert!(ok, "{out}");
}

#[test]
fn fat32_at_an_offset() {
    if !have("mkfs.fat") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = disk(&dir, 64 * MIB);
    let t = PartTarget {
        path: img.clone(),
        offset: MIB,
        size: 40 * MIB,
    };
    let uuid = uuid::Uuid::parse_str("1234abcd-0000-4000-8000-000000000000").unwrap();
    mkfs(
        Path::new("/"),
        &t,
        &FsSpec {
            kind: FsKind::Vfat,
            label: "ESP",
            uuid,
        },
    )
    .unwrap();
    untouched_outside(&img, &t);
    let part = carve(&img, &t);
    let (ok, out) = tool_output("fsck.fat", &["-n"], &part);
    assert!(ok, "{out}");
    let boot = &fs::read(&part).unwrap()[..512];
    assert_eq!(&boot[82..90], b"FAT32   ");
    assert_eq!(
        u32::from_le_bytes(boot[67..71].try_into().unwrap()),
        0x1234abcd
    );
    assert_eq!(&boot[71..82], b"ESP        ");
    // Hidden sectors = the partition's first LBA.
    assert_eq!(u32::from_le_bytes(boot[28..32].try_into().unwrap()), 2048);
}

#[test]
fn small_fat_is_fat16() {
    if !have("mkfs.fat") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = disk(&dir, 16 * MIB);
    let t = PartTarget {
        path: img.clone(),
        offset: 0,
        size: 16 * MIB,
    };
    let spec = FsSpec {
        kind: FsKind::Vfat,
        label: "EFI",
        uuid: derive_uuid(b"s", "fs1"),
    };
    mkfs(Path::new("/"), &t, &spec).unwrap();
    let (ok, out) = tool_output("fsck.fat", &["-n"], &img);
    assert!(ok, "{out}");
    assert_eq!(&fs::read(&img).unwrap()[54..62], b"FAT16   ");
}

#[test]
fn swap_header_matches_mkswap() {
    let dir = tempfile::tempdir().unwrap();
    let img = disk(&dir, 16 * MIB);
    let t = PartTarget {
        path: img.clone(),
        offset: 2 * MIB,
        size: 8 * MIB,
    };
    let uuid = derive_uuid(b"seed", "swap");
    mkfs(
        Path::new("/"),
        &t,
        &FsSpec {
            kind: FsKind::Swap,
            label: "swap",
            uuid,
        },
    )
    .unwrap();
    untouched_outside(&img, &{
        // Only the first page is written.
        PartTarget {
            size: page_size() as u64,
            ..t.clone()
        }
    });
    if !have("mkswap") {
        return;
    }
    let reference = dir.path().join("ref.img");
    File::create(&reference).unwrap().set_len(8 * MIB).unwrap();
    let (ok, out) = tool_output(
        "mkswap",
        &["-L", "swap", "-U", &uuid.to_string()],
        &reference,
    );
    assert!(ok, "{out}");
    let page = page_size();
    let ours = fs::read(carve(&img, &t)).unwrap();
    assert!(
        ours[..page] == fs::read(&reference).unwrap()[..page],
        "swap header differs from mkswap's"
    );
}

#[test]
fn swap_limits() {
    let u = derive_uuid(b"s", "swap");
    assert!(swap_header(9 * 4096, 4096, "x", u)
        .unwrap_err()
        .to_string()
        .contains("at least 10 pages"));
    assert!(swap_header(MIB, 4096, &"x".repeat(17), u).is_err());
    let h = swap_header(MIB, 4096, "x", u).unwrap();
    assert_eq!(u32::from_ne_bytes(h[1028..1032].try_into().unwrap()), 255);
}

#[test]
fn missing_tool_says_what_to_carry() {
    let root = tempfile::tempdir().unwrap();
    let t = PartTarget {
        path: root.path().join("disk"),
        offset: 0,
        size: MIB,
    };
    let spec = FsSpec {
        kind: FsKind::Ext4,
        label: "root",
        uuid: derive_uuid(b"s", "x"),
    };
    let err = format!("{:#}", mkfs(root.path(), &t, &spec).unwrap_err());
    assert!(err.starts_with("making Ext4 \"root\" on "), "{err}");
    assert!(
        err.contains("mke2fs or mkfs.ext4 not found in /bin, /sbin, /usr/bin or /usr/sbin"),
        "{err}"
    );
    assert!(err.ends_with("the initramfs must carry it"), "{err}");
}

#[test]
fn tool_failure_carries_stderr() {
    let root = tempfile::tempdir().unwrap();
    let bin = root.path().join("bin");
    fs::create_dir(&bin).unwrap();
    let tool = bin.join("mkfs.fat");
    fs::write(
        &tool,
        "#!/bin/sh\necho \"mkfs.fat: no space on $*\" >&2\nexit 3\n",
    )
    .unwrap();
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
    let t = PartTarget {
        path: "/dev/vda1".into(),
        offset: 0,
        size: 64 * MIB,
    };
    let spec = FsSpec {
        kind: FsKind::Vfat,
        label: "ESP",
        uuid: derive_uuid(b"s", "x"),
    };
    let err = format!("{:#}", mkfs(root.path(), &t, &spec).unwrap_err());
    assert!(
        err.starts_with("making Vfat \"ESP\" on /dev/vda1: "),
        "{err}"
    );
    assert!(
        err.contains("failed (exit status: 3): mkfs.fat: no space on -F 32 -n ESP -i "),
        "{err}"
    );
    assert!(err.ends_with("/dev/vda1 65536"), "{err}");
}

#[test]
fn labels_are_checked() {
    let t = PartTarget {
        path: "/nonexistent".into(),
        offset: 0,
        size: MIB,
    };
    let u = derive_uuid(b"s", "x");
    let err = mkfs(
        Path::new("/"),
        &t,
        &FsSpec {
            kind: FsKind::Vfat,
            label: "TWELVE_CHARS",
            uuid: u,
        },
    );
    assert!(format!("{:#}", err.unwrap_err()).contains("longer than 11 bytes"));
    let err = mkfs(
        Path::new("/"),
        &t,
        &FsSpec {
            kind: FsKind::Ext4,
            label: &"x".repeat(17),
            uuid: u,
        },
    );
    assert!(format!("{:#}", err.unwrap_err()).contains("longer than 16 bytes"));
}
