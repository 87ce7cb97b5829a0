//! GPT writing on temp files, checked by sgdisk (when installed) and by
//! reading the table back with the gpt crate.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::thread::sleep;
use std::time::Duration;

use gpt::GptConfig;

use super::*;
use crate::disk::nodes::wait_for_paths;

const MIB: u64 = 1 << 20;
const ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
const LINUX: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";

fn layout() -> Layout {
    Layout {
        partitions: vec![
            PartSpec {
                label: "ESP".into(),
                type_guid: ESP.into(),
                size: Size::Bytes(16 * MIB),
                attributes: LEGACY_BIOS_BOOTABLE,
            },
            PartSpec {
                label: "root fs".into(),
                type_guid: LINUX.into(),
                size: Size::Rest,
                attributes: 0,
            },
        ],
    }
}

fn image(dir: &tempfile::TempDir, name: &str, size: u64) -> PathBuf {
    let p = dir.path().join(name);
    File::create(&p).unwrap().set_len(size).unwrap();
    p
}

fn opts(seed: &[u8]) -> WriteOptions<'_> {
    WriteOptions {
        sector_size: 512,
        seed,
        boot_code: None,
    }
}

/// `sgdisk ARGS FILE` stdout, or `None` when sgdisk is not installed.
fn sgdisk(args: &[&str], file: &Path) -> Option<String> {
    let out = match Command::new("sgdisk").args(args).arg(file).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("sgdisk not installed: skipping its checks");
            return None;
        }
        Err(e) => panic!("running sgdisk: {e}"),
    };
    assert!(
        out.status.success(),
        "sgdisk {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

fn head_and_tail(p: &Path) -> Vec<u8> {
    let data = fs::read(p).unwrap();
    let mut v = data[..MIB as usize].to_vec();
    v.extend_from_slice(&data[data.len() - MIB as usize..]);
    v
}

#[test]
fn writes_a_table_sgdisk_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(&dir, "disk.img", 64 * MIB);
    let table = write(&img, &layout(), &opts(b"seed")).unwrap();

    assert_eq!(table.partitions.len(), 2);
    let (esp, root) = (&table.partitions[0], &table.partitions[1]);
    assert_eq!((esp.number, esp.offset, esp.size), (1, MIB, 16 * MIB));
    assert_eq!(root.offset, 17 * MIB);
    // The rest: up to the last usable LBA, before the 33-sector backup table.
    assert_eq!(root.offset + root.size, 64 * MIB - 33 * 512);
    assert_eq!(table.disk_guid, derive_uuid(b"seed", "disk"));
    assert_eq!(esp.guid, derive_uuid(b"seed", "part1"));

    if let Some(v) = sgdisk(&["-v"], &img) {
        assert!(v.contains("No problems found"), "{v}");
    }
    if let Some(p) = sgdisk(&["-p"], &img) {
        let rows: Vec<&str> = p
            .lines()
            .skip_while(|l| !l.starts_with("Number"))
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(rows.len(), 2, "{p}");
        assert!(
            rows[0].contains("2048") && rows[0].contains("EF00") && rows[0].ends_with("ESP"),
            "{p}"
        );
        assert!(
            rows[1].contains("8300") && rows[1].ends_with("root fs"),
            "{p}"
        );
        let guid = table.disk_guid.to_string().to_uppercase();
        assert!(
            p.contains(&format!("Disk identifier (GUID): {guid}")),
            "{p}"
        );
    }
    if let Some(a) = sgdisk(&["-A", "1:show"], &img) {
        assert!(a.contains("1:2:1 (legacy BIOS bootable)"), "{a}");
    }
    if let Some(a) = sgdisk(&["-A", "2:show"], &img) {
        assert!(!a.contains("legacy BIOS bootable"), "{a}");
    }

    // Read back with the gpt crate.
    let disk = GptConfig::new()
        .only_valid_headers(true)
        .open(&img)
        .unwrap();
    assert_eq!(*disk.guid(), table.disk_guid);
    let parts = disk.partitions();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[&1].name, "ESP");
    assert_eq!(parts[&1].flags, LEGACY_BIOS_BOOTABLE);
    assert_eq!(parts[&1].part_type_guid, gpt::partition_types::EFI);
    assert_eq!(parts[&2].part_type_guid, gpt::partition_types::LINUX_FS);
    assert_eq!(parts[&2].part_guid, table.partitions[1].guid);
    assert_eq!(parts[&2].first_lba, 17 * 2048);

    // Protective MBR: one 0xEE record from LBA1, signature.
    let lba0 = &fs::read(&img).unwrap()[..512];
    assert_eq!(lba0[446 + 4], 0xEE);
    assert_eq!(u32::from_le_bytes(lba0[454..458].try_into().unwrap()), 1);
    assert_eq!(
        u32::from_le_bytes(lba0[458..462].try_into().unwrap()),
        64 * 2048 - 1
    );
    assert_eq!(lba0[510..], [0x55, 0xAA]);
    assert!(has_partition_table(&img).unwrap());
}

#[test]
fn same_seed_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let a = image(&dir, "a.img", 64 * MIB);
    let b = image(&dir, "b.img", 64 * MIB);
    let c = image(&dir, "c.img", 64 * MIB);
    // Junk where the old table was must not survive into the new one.
    fs::write(&b, vec![0xA5; 2 * MIB as usize]).unwrap();
    File::options()
        .write(true)
        .open(&b)
        .unwrap()
        .set_len(64 * MIB)
        .unwrap();
    write(&a, &layout(), &opts(b"image@1 52:54:00:12:34:56")).unwrap();
    write(&b, &layout(), &opts(b"image@1 52:54:00:12:34:56")).unwrap();
    write(&c, &layout(), &opts(b"image@1 52:54:00:12:34:57")).unwrap();
    assert!(
        head_and_tail(&a) == head_and_tail(&b),
        "same seed, different tables"
    );
    assert!(
        head_and_tail(&a) != head_and_tail(&c),
        "different seeds, same tables"
    );
}

#[test]
fn four_k_sectors() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(&dir, "4k.img", 64 * MIB);
    let o = WriteOptions {
        sector_size: 4096,
        ..opts(b"s")
    };
    let table = write(&img, &layout(), &o).unwrap();
    assert_eq!(table.partitions[0].offset, MIB);
    assert_eq!(table.partitions[1].offset, 17 * MIB);
    // 4 sectors of entries + the backup header.
    assert_eq!(
        table.partitions[1].offset + table.partitions[1].size,
        64 * MIB - 5 * 4096
    );
    let disk = GptConfig::new()
        .only_valid_headers(true)
        .logical_block_size(LogicalBlockSize::Lb4096)
        .open(&img)
        .unwrap();
    assert_eq!(disk.partitions()[&1].first_lba, 256);
    assert!(has_partition_table(&img).unwrap());
    let bad = WriteOptions {
        sector_size: 1024,
        ..opts(b"s")
    };
    assert!(write(&img, &layout(), &bad).is_err());
}

#[test]
fn boot_code_keeps_records_and_signature() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(&dir, "bios.img", 64 * MIB);
    let code = [0xEB_u8; 440];
    let o = WriteOptions {
        boot_code: Some(&code),
        ..opts(b"s")
    };
    write(&img, &layout(), &o).unwrap();
    let lba0 = fs::read(&img).unwrap()[..512].to_vec();
    assert_eq!(lba0[..440], code);
    assert_eq!(lba0[446 + 4], 0xEE);
    assert_eq!(lba0[510..], [0x55, 0xAA]);
    if let Some(v) = sgdisk(&["-v"], &img) {
        assert!(v.contains("No problems found"), "{v}");
    }
    write_boot_code(&img, &[1, 2, 3]).unwrap();
    assert_eq!(fs::read(&img).unwrap()[..4], [1, 2, 3, 0xEB]);
    let err = write_boot_code(&img, &[0; 441]).unwrap_err();
    assert!(err.to_string().contains("room for 440"), "{err}");
}

#[test]
fn wipe_leaves_no_table() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(&dir, "wipe.img", 64 * MIB);
    assert!(!has_partition_table(&img).unwrap());
    write(&img, &layout(), &opts(b"s")).unwrap();
    wipe_table(&img).unwrap();
    assert!(!has_partition_table(&img).unwrap());
    assert!(GptConfig::new().open(&img).is_err());
    let data = fs::read(&img).unwrap();
    assert!(data[..MIB as usize].iter().all(|&b| b == 0));
    assert!(data[data.len() - MIB as usize..].iter().all(|&b| b == 0));
}

#[test]
fn partition_table_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(&dir, "sig.img", MIB);
    let f = File::options().write(true).open(&img).unwrap();
    f.write_all_at(b"EFI PART", 4096).unwrap();
    assert!(has_partition_table(&img).unwrap(), "4K-sector GPT");
    f.write_all_at(&[0; 8], 4096).unwrap();
    f.write_all_at(&[0x55, 0xAA], 510).unwrap();
    assert!(has_partition_table(&img).unwrap(), "MBR");
    let short = dir.path().join("short");
    fs::write(&short, [0u8; 100]).unwrap();
    assert!(!has_partition_table(&short).unwrap());
    assert!(has_partition_table(&dir.path().join("missing")).is_err());
}

#[test]
fn plan_errors() {
    let part = |label: &str, size| PartSpec {
        label: label.into(),
        type_guid: LINUX.into(),
        size,
        attributes: 0,
    };
    let l = |parts: Vec<PartSpec>| Layout { partitions: parts };
    // 64 MiB disk with 512-byte sectors.
    let (first, last) = (34, 131_038);
    let err = plan(
        first,
        last,
        512,
        &l(vec![part("a", Size::Rest), part("b", Size::Bytes(MIB))]),
    );
    assert!(err
        .unwrap_err()
        .to_string()
        .contains("only the last partition"));
    let err = plan(
        first,
        last,
        512,
        &l(vec![part("a", Size::Bytes(100 * MIB))]),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "partition 1 \"a\" does not fit: needs 100.0 MiB, 63.0 MiB left"
    );
    let err = plan(first, last, 512, &l(vec![part("a", Size::Bytes(0))])).unwrap_err();
    assert!(err.to_string().contains("size 0"), "{err}");
    let err = plan(
        first,
        last,
        512,
        &l(vec![part(&"x".repeat(37), Size::Rest)]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("longer than 36"), "{err}");
    assert!(plan(first, last, 512, &l(vec![])).is_err());
    // Sizes round up to sectors, starts to MiB.
    let spans = plan(
        first,
        last,
        512,
        &l(vec![
            part("a", Size::Bytes(1000)),
            part("b", Size::Bytes(1)),
        ]),
    )
    .unwrap();
    assert_eq!(spans, [(2048, 2049), (4096, 4096)]);
}

#[test]
fn a_refused_layout_leaves_the_disk_alone() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(&dir, "keep.img", 64 * MIB);
    write(&img, &layout(), &opts(b"s")).unwrap();
    let before = fs::read(&img).unwrap();
    let bad_type = Layout {
        partitions: vec![PartSpec {
            type_guid: "EF00".into(),
            ..layout().partitions[1].clone()
        }],
    };
    let err = format!("{:#}", write(&img, &bad_type, &opts(b"t")).unwrap_err());
    assert!(
        err.starts_with("parsing the type GUID \"EF00\" of partition \"root fs\""),
        "{err}"
    );
    let mut too_big = layout();
    too_big.partitions[0].size = Size::Bytes(100 * MIB);
    let err = format!("{:#}", write(&img, &too_big, &opts(b"t")).unwrap_err());
    assert!(err.starts_with("placing partitions on "), "{err}");
    let code = [0u8; 441];
    let o = WriteOptions {
        boot_code: Some(&code),
        ..opts(b"t")
    };
    assert!(write(&img, &layout(), &o).is_err());
    assert!(
        fs::read(&img).unwrap() == before,
        "a refused layout changed the disk"
    );
}

#[test]
fn file_targets_and_noops() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(&dir, "t.img", 64 * MIB);
    let table = write(&img, &layout(), &opts(b"s")).unwrap();
    reread(&img).unwrap();
    wait_for_partitions(&img, 2, Duration::ZERO).unwrap();
    let t = targets(&img, &table).unwrap();
    assert_eq!(
        t[0],
        PartTarget {
            path: img.clone(),
            offset: MIB,
            size: 16 * MIB
        }
    );
    assert_eq!(t[1].offset, 17 * MIB);
}

#[test]
fn partition_node_names() {
    let n = |d: &str, i| partition_node(Path::new(d), i);
    assert_eq!(n("/dev/sda", 1), Path::new("/dev/sda1"));
    assert_eq!(n("/dev/vdb", 12), Path::new("/dev/vdb12"));
    assert_eq!(n("/dev/nvme0n1", 2), Path::new("/dev/nvme0n1p2"));
    assert_eq!(n("/dev/mmcblk0", 1), Path::new("/dev/mmcblk0p1"));
}

#[test]
fn waiting_for_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("vda1"), dir.path().join("vda2"));
    let late = b.clone();
    let t = std::thread::spawn(move || {
        sleep(Duration::from_millis(100));
        fs::write(late, "").unwrap();
    });
    fs::write(&a, "").unwrap();
    wait_for_paths(&[a.clone(), b.clone()], Duration::from_secs(5)).unwrap();
    t.join().unwrap();
    let c = dir.path().join("vda3");
    let err = wait_for_paths(&[a, c.clone()], Duration::from_millis(120)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{} did not appear within 120 ms", c.display())
    );
}
