//! Kernel module coldplug, what udev does at boot, without udev: read every
//! device's `modalias` from sysfs, look it up in `modules.alias`, load the
//! module and its `modules.dep` dependencies (dependencies first), and repeat
//! while loading created new devices (virtio_pci → virtio bus devices →
//! virtio_net).
//!
//! The scan takes a root directory and the loader is a hook, so the whole
//! logic runs in unit tests against a fake sysfs (u-root `kmodule.ProbeOpts`).

mod glob;
mod index;
mod load;

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

pub use index::{module_name, Aliases, Deps};
pub use load::load_module;

/// What coldplug did.
#[derive(Debug, Default)]
pub struct Report {
    /// Modules loaded, in load order.
    pub loaded: Vec<String>,
    /// Modules that refused to load, with the reason (often harmless: a
    /// driver whose alias matched but which found nothing to drive).
    pub failed: Vec<(String, String)>,
}

/// Inputs of a coldplug run.
pub struct Coldplug<'a> {
    /// `/` on a node; a fake tree in tests.
    pub root: PathBuf,
    /// Kernel release, selects `lib/modules/<release>`.
    pub release: String,
    /// Loads one module file; `Err` with `AlreadyExists` counts as loaded.
    pub loader: &'a mut dyn FnMut(&Path) -> io::Result<()>,
    /// Pause between rounds, for probes to register new devices.
    pub settle: Duration,
}

/// At most this many scan rounds: each round can only reveal devices of a
/// deeper bus, and real stacks are 3–4 levels deep.
const MAX_ROUNDS: usize = 8;

impl Coldplug<'_> {
    pub fn run(&mut self) -> Result<Report> {
        let moddir = self.root.join("lib/modules").join(&self.release);
        let mut report = Report::default();
        if !moddir.is_dir() {
            log::warn!(
                "no modules for kernel {} in this initramfs ({} missing); relying on built-in drivers",
                self.release,
                moddir.display()
            );
            return Ok(report);
        }
        let read = |name: &str| {
            fs::read_to_string(moddir.join(name))
                .with_context(|| format!("reading {}/{name}", moddir.display()))
        };
        let deps = Deps::parse(&read("modules.dep")?);
        let aliases = Aliases::parse(&read("modules.alias")?);
        // Modules the image needs whatever the hardware (filesystems, the
        // crc32c driver ext4 asks for by name): one name per line.
        let always: Vec<String> = fs::read_to_string(self.root.join("etc/drover/modules"))
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(module_name)
            .collect();

        let mut attempted = BTreeSet::new();
        for round in 0..MAX_ROUNDS {
            let mut wanted = BTreeSet::new();
            if round == 0 {
                wanted.extend(always.iter().cloned());
            }
            for modalias in scan_modaliases(&self.root.join("sys")) {
                wanted.extend(aliases.lookup(&modalias).map(str::to_string));
            }
            let new: Vec<String> = wanted
                .into_iter()
                .filter(|m| !attempted.contains(m))
                .collect();
            if new.is_empty() {
                break;
            }
            for m in new {
                for dep in deps.load_order(&m) {
                    if !attempted.insert(dep.clone()) {
                        continue;
                    }
                    let path = moddir.join(&deps.modules[&dep].0);
                    match (self.loader)(&path) {
                        Ok(()) => report.loaded.push(dep),
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => {
                            log::debug!("loading {dep}: {e}");
                            report.failed.push((dep, e.to_string()));
                        }
                    }
                }
                // Built-in or unknown to modules.dep: nothing to load.
                attempted.insert(m);
            }
            std::thread::sleep(self.settle);
        }
        Ok(report)
    }
}

/// Every device `modalias` under `sys/bus/*/devices/*`, deduplicated.
fn scan_modaliases(sys: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Ok(buses) = fs::read_dir(sys.join("bus")) else {
        return out;
    };
    for bus in buses.flatten() {
        let Ok(devices) = fs::read_dir(bus.path().join("devices")) else {
            continue;
        };
        for dev in devices.flatten() {
            if let Ok(alias) = fs::read_to_string(dev.path().join("modalias")) {
                let alias = alias.trim();
                if !alias.is_empty() {
                    out.insert(alias.to_string());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    /// A fake machine: one virtio-net PCI device; loading virtio_pci makes
    /// the virtio bus device appear, as the real driver does.
    #[test]
    fn loads_bus_then_device_drivers_in_dependency_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let m = "lib/modules/6.1.0-test";
        write(
            root,
            &format!("{m}/modules.dep"),
            "kernel/virtio_pci.ko: kernel/virtio_ring.ko\nkernel/virtio_ring.ko:\n\
             kernel/virtio_net.ko: kernel/net_failover.ko kernel/failover.ko\n\
             kernel/net_failover.ko: kernel/failover.ko\nkernel/failover.ko:\n\
             kernel/ext4.ko: kernel/jbd2.ko\nkernel/jbd2.ko:\nkernel/e1000.ko:\n",
        );
        write(
            root,
            &format!("{m}/modules.alias"),
            "alias pci:v00001AF4d00001000sv*sd*bc*sc*i* virtio_pci\n\
             alias virtio:d00000001v* virtio_net\n\
             alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000\n",
        );
        write(root, "etc/drover/modules", "# needed by the image\next4\n");
        write(
            root,
            "sys/bus/pci/devices/0000:00:03.0/modalias",
            "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00\n",
        );
        write(
            root,
            "sys/bus/pci/devices/0000:00:01.0/modalias",
            "pci:v00008086d00007000sv0sd0bc06sc01i00\n",
        );

        let mut calls = Vec::new();
        let root_buf = root.to_path_buf();
        let mut loader = |p: &Path| -> io::Result<()> {
            let name = module_name(p.to_str().unwrap());
            if name == "virtio_pci" {
                write(
                    &root_buf,
                    "sys/bus/virtio/devices/virtio0/modalias",
                    "virtio:d00000001v00001AF4\n",
                );
            }
            if name == "jbd2" {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            calls.push(name);
            Ok(())
        };
        let report = Coldplug {
            root: root.to_path_buf(),
            release: "6.1.0-test".into(),
            loader: &mut loader,
            settle: Duration::ZERO,
        }
        .run()
        .unwrap();
        assert_eq!(
            calls,
            [
                "ext4",
                "virtio_ring",
                "virtio_pci",
                "failover",
                "net_failover",
                "virtio_net"
            ]
        );
        assert_eq!(report.loaded, calls);
        assert!(report.failed.is_empty());
    }

    #[test]
    fn missing_module_dir_is_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let mut loader = |_: &Path| -> io::Result<()> { panic!("nothing to load") };
        let report = Coldplug {
            root: dir.path().to_path_buf(),
            release: "none".into(),
            loader: &mut loader,
            settle: Duration::ZERO,
        }
        .run()
        .unwrap();
        assert!(report.loaded.is_empty());
    }
}
