//! Disk selection against fake sysfs trees shaped like the kernel's:
//! `sys/block/NAME` -> `../devices/<bus path>/block/NAME`, `device` -> the
//! bus device.

use std::os::unix::fs::symlink;

use super::*;

const GIB: u64 = 1 << 30;

struct Fake(tempfile::TempDir);

impl Fake {
    fn new() -> Self {
        let f = Fake(tempfile::tempdir().unwrap());
        fs::create_dir_all(f.root().join("sys/block")).unwrap();
        f
    }

    fn root(&self) -> &Path {
        self.0.path()
    }

    /// A disk of `bytes` on `bus` (a path under sys/devices); attributes
    /// named `device/...` land in the bus device directory.
    fn disk(&self, name: &str, bytes: u64, bus: &str, attrs: &[(&str, &[u8])]) -> &Self {
        let rel = format!("devices/{bus}/block/{name}");
        let dir = self.root().join("sys").join(&rel);
        fs::create_dir_all(dir.join("queue")).unwrap();
        symlink("../..", dir.join("device")).unwrap();
        symlink(
            format!("../{rel}"),
            self.root().join("sys/block").join(name),
        )
        .unwrap();
        fs::write(dir.join("size"), format!("{}\n", bytes / 512)).unwrap();
        for (k, v) in [
            ("removable", "0\n"),
            ("ro", "0\n"),
            ("queue/logical_block_size", "512\n"),
        ] {
            fs::write(dir.join(k), v).unwrap();
        }
        for (k, v) in attrs {
            fs::write(dir.join(k), v).unwrap();
        }
        self
    }

    fn select(&self, sel: DiskSelector, min: u64) -> Result<Disk, SelectError> {
        select(self.root(), &sel, min)
    }
}

fn virtio(n: u32) -> String {
    format!("pci0000:00/0000:00:0{n}.0/virtio{n}")
}

const USB: &str = "pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0";

/// Two virtio disks, an NVMe, a USB stick and the virtual noise.
fn rack() -> Fake {
    let f = Fake::new();
    f.disk("vda", 20 * GIB, &virtio(2), &[("serial", b"VIRT-A")])
        .disk("vdb", 40 * GIB, &virtio(3), &[("serial", b"VIRT B  \n")])
        .disk(
            "nvme0n1",
            100 * GIB,
            "pci0000:00/0000:00:05.0/nvme/nvme0",
            &[
                ("device/serial", b"S4EWNX0R123456      \n"),
                (
                    "device/model",
                    b"Samsung SSD 970 EVO 500GB               \n",
                ),
                ("wwid", b"eui.0025388b71b2c3d4\n"),
                ("queue/logical_block_size", b"4096\n"),
            ],
        )
        .disk(
            "sdb",
            32 * GIB,
            USB,
            &[("device/model", b"Flash Disk"), ("removable", b"1")],
        )
        .disk("loop0", 10 * GIB, "virtual/block", &[])
        .disk("zram0", 4 * GIB, "virtual/block", &[])
        .disk("dm-0", 20 * GIB, "virtual/block", &[])
        .disk(
            "sr0",
            GIB,
            "pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0",
            &[],
        );
    f
}

#[test]
fn scan_skips_virtual_and_reads_attributes() {
    let all = scan(rack().root()).unwrap();
    let names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["nvme0n1", "sdb", "vda", "vdb"]);
    let nvme = &all[0];
    assert_eq!(nvme.serial, "S4EWNX0R123456");
    assert_eq!(nvme.model, "Samsung SSD 970 EVO 500GB");
    assert_eq!(nvme.logical_sector_size, 4096);
    assert_eq!(nvme.size_bytes, 100 * GIB);
    assert!(!nvme.usb && !nvme.removable);
    assert!(all[1].usb && all[1].removable);
    assert_eq!(all[3].serial, "VIRT B");
}

#[test]
fn auto_picks_the_single_fixed_disk_and_never_usb() {
    let f = Fake::new();
    f.disk("sda", 64 * GIB, USB, &[]) // removable=0 USB disk: still refused
        .disk("vda", 20 * GIB, &virtio(2), &[]);
    let d = f.select(DiskSelector::Auto, 10 * GIB).unwrap();
    assert_eq!(d.name, "vda");
    assert_eq!(d.dev, f.root().join("dev/vda"));
    assert_eq!(d.logical_sector_size, 512);
}

#[test]
fn auto_refuses_to_guess_between_disks() {
    let err = rack().select(DiskSelector::Auto, GIB).unwrap_err();
    assert!(
        matches!(err, SelectError::Ambiguous { count: 3, .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("set deploy.disk"), "{msg}");
    assert!(msg.contains("vda (20.0 GiB, serial \"VIRT-A\")"), "{msg}");
    assert!(
        msg.contains("sdb (32.0 GiB, model \"Flash Disk\", removable, usb)"),
        "{msg}"
    );
}

#[test]
fn auto_size_filter_can_resolve_ambiguity() {
    // Only nvme0n1 holds 50 GiB.
    assert_eq!(
        rack().select(DiskSelector::Auto, 50 * GIB).unwrap().name,
        "nvme0n1"
    );
}

#[test]
fn auto_without_fixed_disk_lists_what_it_saw() {
    let f = Fake::new();
    f.disk("sda", 64 * GIB, USB, &[("removable", b"1")]);
    let msg = f.select(DiskSelector::Auto, GIB).unwrap_err().to_string();
    assert!(msg.contains("no usable disk"), "{msg}");
    assert!(msg.contains("sda (64.0 GiB, removable, usb)"), "{msg}");
    assert!(msg.contains("set deploy.disk"), "{msg}");

    let empty = Fake::new();
    let msg = empty
        .select(DiskSelector::Auto, GIB)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("disks seen: none"), "{msg}");
}

#[test]
fn too_small_names_both_sizes() {
    let f = Fake::new();
    f.disk("vda", GIB, &virtio(2), &[]);
    let err = f.select(DiskSelector::Auto, 2 * GIB + GIB / 2).unwrap_err();
    assert_eq!(
        err.to_string(),
        "disk vda is too small: 1.0 GiB, the image needs 2.5 GiB"
    );
    let err = f
        .select(DiskSelector::Path("/dev/vda".into()), 2 * GIB)
        .unwrap_err();
    assert!(matches!(err, SelectError::TooSmall { .. }), "{err}");
}

#[test]
fn named_disks() {
    let f = rack();
    let pick = |sel| f.select(sel, GIB).map(|d| d.name);
    assert_eq!(pick(DiskSelector::Path("/dev/vdb".into())).unwrap(), "vdb");
    // Removable, but asked for by name: allowed.
    assert_eq!(pick(DiskSelector::Path("/dev/sdb".into())).unwrap(), "sdb");
    assert_eq!(pick(DiskSelector::Serial("VIRT B".into())).unwrap(), "vdb");
    assert_eq!(
        pick(DiskSelector::Serial("S4EWNX0R123456".into())).unwrap(),
        "nvme0n1"
    );
    assert_eq!(
        pick(DiskSelector::ById("virtio-VIRT-A".into())).unwrap(),
        "vda"
    );
    assert_eq!(
        pick(DiskSelector::ById("virtio-VIRT_B".into())).unwrap(),
        "vdb"
    );
    assert_eq!(
        pick(DiskSelector::ById(
            "nvme-Samsung_SSD_970_EVO_500GB_S4EWNX0R123456".into()
        ))
        .unwrap(),
        "nvme0n1"
    );
    assert_eq!(
        pick(DiskSelector::ById("nvme-eui.0025388b71b2c3d4".into())).unwrap(),
        "nvme0n1"
    );
    assert_eq!(
        pick(DiskSelector::Path("/dev/disk/by-id/virtio-VIRT-A".into())).unwrap(),
        "vda"
    );
    assert_eq!(
        pick(DiskSelector::Wwn("0025388B71B2C3D4".into())).unwrap(),
        "nvme0n1"
    );
}

#[test]
fn missing_named_disk_is_an_error_never_a_fallback() {
    let f = rack();
    for sel in [
        DiskSelector::Path("/dev/vdz".into()),
        DiskSelector::ById("virtio-NOPE".into()),
        DiskSelector::Serial("NOPE".into()),
        DiskSelector::Wwn("naa.5000c500deadbeef".into()),
    ] {
        let err = f.select(sel.clone(), GIB).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, SelectError::NotFound { .. }), "{msg}");
        assert!(
            msg.starts_with(&format!("deploy.disk={sel}: no such disk")),
            "{msg}"
        );
        assert!(msg.contains("vdb (40.0 GiB, serial \"VIRT B\")"), "{msg}");
    }
}

#[test]
fn udev_links_win_when_present() {
    let f = rack();
    let by_id = f.root().join("dev/disk/by-id");
    fs::create_dir_all(&by_id).unwrap();
    symlink("../../vdb", by_id.join("scsi-0QEMU_disk")).unwrap();
    let d = f
        .select(DiskSelector::ById("scsi-0QEMU_disk".into()), GIB)
        .unwrap();
    assert_eq!(d.name, "vdb");
    // A link to a partition is not a whole disk.
    symlink("../../vdb1", by_id.join("virtio-VIRT-A-part1")).unwrap();
    let err = f.select(DiskSelector::ById("virtio-VIRT-A-part1".into()), GIB);
    assert!(matches!(err, Err(SelectError::NotFound { .. })));
}

#[test]
fn sata_serial_from_vpd_page_and_wwn() {
    let f = Fake::new();
    let mut vpd = vec![0, 0x80, 0, 20];
    vpd.extend_from_slice(b"     WD-WCC4N1234567");
    f.disk(
        "sda",
        500 * GIB,
        "pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0",
        &[
            ("device/vendor", b"ATA     \n"),
            ("device/model", b"WDC WD5000AAKX-0\n"),
            ("device/vpd_pg80", &vpd),
            ("device/wwid", b"naa.50014EE2B1234567\n"),
        ],
    );
    let c = &scan(f.root()).unwrap()[0];
    assert_eq!(c.serial, "WD-WCC4N1234567");
    assert_eq!(
        c.by_id,
        [
            "ata-WDC_WD5000AAKX-0_WD-WCC4N1234567",
            "wwn-0x50014ee2b1234567"
        ]
    );
    let pick = |sel| f.select(sel, GIB).unwrap().name;
    assert_eq!(pick(DiskSelector::Wwn("0x50014ee2b1234567".into())), "sda");
    assert_eq!(
        pick(DiskSelector::ById("wwn-0x50014ee2b1234567".into())),
        "sda"
    );
    assert_eq!(pick(DiskSelector::Serial("WD-WCC4N1234567".into())), "sda");
}

#[test]
fn read_only_duplicate_hidden_and_partitions() {
    let f = Fake::new();
    f.disk(
        "vda",
        20 * GIB,
        &virtio(2),
        &[("serial", b"SAME"), ("ro", b"1")],
    )
    .disk("vdb", 20 * GIB, &virtio(3), &[("serial", b"SAME")])
    .disk(
        "nvme0c0n1",
        20 * GIB,
        "pci0000:00/0000:00:05.0/nvme/nvme0",
        &[("hidden", b"1")],
    )
    .disk("vdc1", 20 * GIB, &virtio(4), &[("partition", b"1")]);
    let names: Vec<String> = scan(f.root())
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["vda", "vdb"]);
    let err = f
        .select(DiskSelector::Path("/dev/vda".into()), GIB)
        .unwrap_err();
    assert_eq!(err.to_string(), "disk vda is read-only");
    let err = f
        .select(DiskSelector::Serial("SAME".into()), GIB)
        .unwrap_err();
    assert!(
        matches!(err, SelectError::Duplicate { count: 2, .. }),
        "{err}"
    );
    // The read-only disk does not count for auto.
    assert_eq!(f.select(DiskSelector::Auto, GIB).unwrap().name, "vdb");
}

#[test]
fn sd_cards_are_removable() {
    let f = Fake::new();
    f.disk(
        "mmcblk0",
        32 * GIB,
        "platform/fe320000.mmc/mmc_host/mmc0/mmc0:aaaa",
        &[("device/type", b"SD\n")],
    )
    .disk(
        "mmcblk1",
        8 * GIB,
        "platform/fe330000.mmc/mmc_host/mmc1/mmc1:0001",
        &[("device/type", b"MMC\n")],
    );
    assert_eq!(f.select(DiskSelector::Auto, GIB).unwrap().name, "mmcblk1");
}

#[test]
fn missing_sysfs_is_an_io_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let err = select(dir.path(), &DiskSelector::Auto, 0).unwrap_err();
    assert!(err.to_string().starts_with("reading "), "{err}");
    assert!(err.to_string().ends_with("sys/block"), "{err}");
}
