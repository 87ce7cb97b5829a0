//! Several blank machines deploying the test OS (`demo@1.0`) together on
//! one PXE network: the lab they share and their VMs. What
//! `tests/chain.rs`, `tests/torrent.rs` and the demo start with.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Result};

use crate::artifacts::{self, Artifacts};
use crate::lab::PxeLab;
use crate::procs::Procs;
use crate::qemu::{DiskBus, Firmware, Nic, Vm};
use crate::server::{Server, ServerConfig};
use crate::testos::blank_disk;

/// One machine's hardware and identity.
#[derive(Debug, Clone, Copy)]
pub struct Machine {
    pub name: &'static str,
    pub firmware: Firmware,
    pub nic: Nic,
    pub bus: DiskBus,
    pub mac: &'static str,
}

impl Machine {
    /// Its hardware in words, e.g. "SeaBIOS, virtio-net, virtio-blk".
    pub fn hardware(&self) -> String {
        let firmware = match self.firmware {
            Firmware::Bios => "SeaBIOS",
            Firmware::Uefi => "OVMF (UEFI)",
        };
        let nic = match self.nic {
            Nic::VirtioNet => "virtio-net",
            Nic::E1000 => "e1000",
        };
        let bus = match self.bus {
            DiskBus::VirtioBlk => "virtio-blk",
            DiskBus::Nvme => "NVMe",
        };
        format!("{firmware}, {nic}, {bus}")
    }

    /// Start its VM, the `index`-th on `lab` (`tap0` for the first, a tap
    /// of its own for the others), with a blank 1 GiB disk
    /// `<dir>/<name>.qcow2`; it boots from the network first and may
    /// reboot. Returns the VM and its disk.
    pub fn spawn(&self, index: usize, lab: &PxeLab, procs: &Procs) -> Result<(Vm, PathBuf)> {
        let disk = procs.log_dir().join(format!("{}.qcow2", self.name));
        blank_disk(&disk, "1G")?;
        let builder = if index == 0 {
            lab.vm(self.name)
        } else {
            lab.vm_on_tap(self.name, &format!("tap{index}"))?
        };
        let vm = builder
            .firmware(self.firmware)
            .nic(self.nic)
            .mac(self.mac)
            .disk(&disk)
            .disk_bus(self.bus)
            .allow_reboot(true)
            .spawn(procs)?;
        Ok((vm, disk))
    }
}

/// A lab whose server serves demo@1.0 from `store` (the test OS, see
/// [`crate::testos::store`]) with `[deploy] mode = mode` and
/// `on_error = "poweroff"`, and no default image: only the machines an
/// operator adds and deploys install anything. `extra_toml` is appended to
/// the config (more tables, e.g. `[chain]`).
pub fn lab(
    procs: &Procs,
    art: &Artifacts,
    store: &Path,
    mode: &str,
    extra_toml: &str,
) -> Result<PxeLab> {
    let bin = artifacts::server_bin()?;
    PxeLab::start(procs, &bin, |ns| {
        let mut c = ServerConfig::new(ns, &art.kernel, &art.initrd)
            .store(store)
            .deploy("mode", mode)
            .deploy("on_error", "poweroff");
        c.deploy.retain(|(k, _)| k != "image");
        c.extra_toml.push_str(extra_toml);
        c
    })
}

/// As an operator would: `node add MAC --name NAME` for each machine, then
/// `deploy --image demo [EXTRA…] MAC…` for all of them; each must succeed.
pub fn add_and_deploy(server: &Server, machines: &[Machine], extra: &[&str]) -> Result<()> {
    for m in machines {
        let out = server.cli(&["node", "add", m.mac, "--name", m.name])?;
        ensure!(out.code == Some(0), "node add {}: {out:?}", m.mac);
    }
    let mut deploy = vec!["deploy", "--image", "demo"];
    deploy.extend(extra);
    deploy.extend(machines.iter().map(|m| m.mac));
    let out = server.cli(&deploy)?;
    ensure!(out.code == Some(0), "{}: {out:?}", deploy.join(" "));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hardware_in_words() {
        let m = Machine {
            name: "n",
            firmware: Firmware::Uefi,
            nic: Nic::E1000,
            bus: DiskBus::Nvme,
            mac: "52:54:00:00:00:01",
        };
        assert_eq!(m.hardware(), "OVMF (UEFI), e1000, NVMe");
    }
}
