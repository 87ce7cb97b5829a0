//! The test OS image: built by `testos/build.sh` and imported into a store
//! with `drover-server image import` as `demo@1.0`, signed with the key
//! `make initramfs` baked into the initrd (`<artifacts>/keys`). Built once
//! per process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{bail, ensure, Context as _, Result};

use crate::artifacts::{self, Artifacts};

/// Run a command; its output is the error when it fails.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("{cmd:?} failed ({}):\n{text}", out.status);
    }
    Ok(text)
}

/// The store holding `demo@1.0`, under `target/qemu-tests/deploy-image`.
pub fn store(art: &Artifacts) -> Result<PathBuf> {
    static STORE: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut guard = STORE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = guard.as_ref() {
        return Ok(s.clone());
    }
    let base = artifacts::target_dir().join("qemu-tests/deploy-image");
    let _ = std::fs::remove_dir_all(&base);
    let os = base.join("testos");
    let script = artifacts::workspace_root().join("qemu-tests/testos/build.sh");
    run(Command::new("bash")
        .arg(&script)
        .arg(&os)
        .args(["demo", "1.0"]))?;
    let key = art
        .kernel
        .parent()
        .context("artifacts dir")?
        .join("keys/drover.key");
    ensure!(
        key.is_file(),
        "{} missing: run `make initramfs`",
        key.display()
    );
    let store = base.join("store");
    let bin = artifacts::server_bin()?;
    let f = |name: &str| os.join(name).display().to_string();
    run(Command::new(&bin)
        .args(["image", "import", "--store"])
        .arg(&store)
        .args(["--name", "demo", "--version", "1.0", "--key"])
        .arg(&key)
        .args(["--bios-boot-code", &f("bios-mbr.bin")])
        .arg("--partition")
        .arg(format!(
            "label=ESP,type=esp,size=64M,fs=vfat,content=raw:{},attributes=legacy-bios-bootable",
            f("esp.img")
        ))
        .arg("--partition")
        .arg(format!(
            "label=drover-root,type=linux,size=rest,fs=ext4,content=tar:{}",
            f("root.tar")
        )))?;
    *guard = Some(store.clone());
    Ok(store)
}

/// A blank qcow2 disk of `size` (qemu-img syntax, e.g. `1G`).
pub fn blank_disk(path: &Path, size: &str) -> Result<()> {
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(path)
        .arg(size))?;
    Ok(())
}

/// A raw copy of a qcow2 disk, for tools that read raw images.
pub fn raw_copy(disk: &Path, raw: &Path) -> Result<()> {
    run(Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(disk)
        .arg(raw))?;
    Ok(())
}
