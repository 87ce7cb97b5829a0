//! The committed demo image (`fixtures/demo`, see `fixtures/README.md`):
//! what an agent of this version must keep accepting, byte for byte.

use std::io::Read as _;

use super::pipeline::{stream_source, verify_image, SourceProgress, SourceReader};
use super::*;

const MANIFEST: &[u8] = include_bytes!("fixtures/demo/manifest.json");
const SIGNATURE: &[u8] = include_bytes!("fixtures/demo/manifest.sig");
const PAYLOAD: &[u8] = include_bytes!("fixtures/demo/payload");
const PUBLIC_KEY: &str = include_str!("fixtures/test.pub");

/// The ESP's raw content.
fn demo_esp() -> Vec<u8> {
    b"drover demo ESP\n"
        .iter()
        .copied()
        .cycle()
        .take(6000)
        .collect()
}

/// The MBR boot code: a jump and a marker, not a real loader.
const DEMO_BOOT_CODE: &[u8; 16] = b"\xeb\x63\x90drover-demo\0\0";

#[test]
fn demo_fixture_verifies_parses_and_streams() {
    let key = sign::parse_public_key(PUBLIC_KEY).unwrap();
    sign::verify(MANIFEST, SIGNATURE, &key).unwrap();
    let m = Manifest::parse(MANIFEST).unwrap();
    // The format's serialization is stable: same bytes back.
    assert_eq!(
        String::from_utf8(m.to_bytes()).unwrap(),
        String::from_utf8(MANIFEST.to_vec()).unwrap()
    );
    assert_eq!(
        (m.name.as_str(), m.version.as_str(), m.chunk_size),
        ("demo", "1", 4096)
    );
    assert_eq!(
        m.disk.bios_boot_code,
        Some(BootCode(DEMO_BOOT_CODE.to_vec()))
    );
    assert_eq!(
        m.boot,
        Boot {
            uefi: true,
            bios: true
        }
    );
    verify_image(&m, &mut MemSource(PAYLOAD)).unwrap();

    let mut esp = Vec::new();
    let mut progress = SourceProgress::new(&m, 0).unwrap();
    stream_source(&m, &mut progress, &mut MemSource(PAYLOAD), |_, b| {
        esp.extend_from_slice(b);
        Ok(())
    })
    .unwrap();
    assert_eq!(esp, demo_esp());

    let mut src = MemSource(PAYLOAD);
    let mut tar = tar::Archive::new(SourceReader::new(&m, 1, &mut src).unwrap());
    let mut hostname = String::new();
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_str() == Some("etc/hostname") {
            entry.read_to_string(&mut hostname).unwrap();
        }
    }
    assert_eq!(hostname, "node\n");
    assert!(m.disk.partitions[2].content.is_none());
}

#[test]
fn demo_fixture_rejects_tampering() {
    let key = sign::parse_public_key(PUBLIC_KEY).unwrap();
    let mut manifest = MANIFEST.to_vec();
    // Same JSON meaning, different bytes: the signature covers bytes.
    manifest.insert(1, b' ');
    let err = sign::verify(&manifest, SIGNATURE, &key).unwrap_err();
    assert!(err
        .to_string()
        .starts_with("manifest.sig does not match the trusted key "));
}

/// Rewrites `fixtures/` (see its README). Ignored: run on purpose only.
#[cfg(feature = "sign")]
#[test]
#[ignore]
fn regenerate_demo_fixture() {
    use super::manifest::MIB;
    use super::tests::spec;

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/image/fixtures");
    let dir = root.join("demo");
    let _ = std::fs::remove_dir_all(&dir);
    let opts = BuildOptions {
        chunk_size: 4096,
        level: 6,
        threads: 1,
    };
    let mut b = ImageBuilder::new(&dir, "demo", "1", opts).unwrap();
    let mut esp = spec("ESP", TypeGuid::ESP, PartSize::Bytes(MIB), Filesystem::Vfat);
    esp.attributes = vec![Attribute::LegacyBiosBootable];
    b.add_partition(esp, Some((ContentKind::Raw, &mut &demo_esp()[..])))
        .unwrap();
    let tar = super::tar_count::tests::sample_tar();
    let root_fs = spec(
        "root",
        TypeGuid::LINUX_ROOT_X86_64,
        PartSize::Bytes(64 * MIB),
        Filesystem::Ext4,
    );
    b.add_partition(root_fs, Some((ContentKind::Tar, &mut &tar[..])))
        .unwrap();
    let swap = spec(
        "swap",
        TypeGuid::LINUX_SWAP,
        PartSize::Rest,
        Filesystem::Swap,
    );
    b.add_partition(swap, None).unwrap();
    b.set_bios_boot_code(DEMO_BOOT_CODE).unwrap();
    b.finish().unwrap();
    let key = sign::SigningKey::from_bytes(&[0x42; 32]);
    sign::write_signature(&dir, &key).unwrap();
    sign::write_public_key(&root.join("test.pub"), &key.public_key()).unwrap();
}
