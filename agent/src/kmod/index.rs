//! The two depmod indexes the agent reads, parsed from text: `modules.dep`
//! (what each module needs loaded first) and `modules.alias` (which module
//! drives which device `modalias`). Pure; the files come from the initramfs.

use std::collections::HashMap;

/// A module's canonical name: file stem without `.ko[.xz|.zst|.gz]`, with
/// `-` folded to `_` as the kernel does.
pub fn module_name(path_or_name: &str) -> String {
    let base = path_or_name.rsplit('/').next().unwrap_or(path_or_name);
    let stem = base.split(".ko").next().unwrap_or(base);
    stem.replace('-', "_")
}

/// `modules.dep`: name → (relative path, dependency names).
#[derive(Debug, Default)]
pub struct Deps {
    pub modules: HashMap<String, (String, Vec<String>)>,
}

impl Deps {
    pub fn parse(text: &str) -> Deps {
        let mut modules = HashMap::new();
        for line in text.lines() {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let path = path.trim();
            if path.is_empty() {
                continue;
            }
            let deps = deps.split_whitespace().map(module_name).collect();
            modules.insert(module_name(path), (path.to_string(), deps));
        }
        Deps { modules }
    }

    /// `name` and everything it needs, dependencies first, each once.
    /// Names that are not in the index (built-in) are left out.
    pub fn load_order(&self, name: &str) -> Vec<String> {
        let mut order = Vec::new();
        let mut seen = std::collections::HashSet::new();
        // Iterative post-order DFS: (module, children already pushed?).
        let mut stack = vec![(module_name(name), false)];
        while let Some((m, expanded)) = stack.pop() {
            if expanded {
                order.push(m);
                continue;
            }
            if !self.modules.contains_key(&m) || !seen.insert(m.clone()) {
                continue;
            }
            stack.push((m.clone(), true));
            for dep in self.modules[&m].1.iter().rev() {
                stack.push((dep.clone(), false));
            }
        }
        order
    }
}

/// `modules.alias`: `alias PATTERN MODULE` lines, in file order.
#[derive(Debug, Default)]
pub struct Aliases {
    pub entries: Vec<(String, String)>,
}

impl Aliases {
    pub fn parse(text: &str) -> Aliases {
        let entries = text
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                (w.next()? == "alias").then_some(())?;
                Some((w.next()?.to_string(), module_name(w.next()?)))
            })
            .collect();
        Aliases { entries }
    }

    /// Modules whose pattern matches this device `modalias`.
    pub fn lookup<'a>(&'a self, modalias: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries
            .iter()
            .filter(move |(pat, _)| super::glob::matches(pat.as_bytes(), modalias.as_bytes()))
            .map(|(_, m)| m.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/block/virtio-blk.ko.xz:
";

    #[test]
    fn names_are_canonical() {
        assert_eq!(
            module_name("kernel/drivers/block/virtio-blk.ko.xz"),
            "virtio_blk"
        );
        assert_eq!(module_name("e1000e"), "e1000e");
        assert_eq!(module_name("crc32c-generic"), "crc32c_generic");
    }

    #[test]
    fn dependencies_come_first_once() {
        let d = Deps::parse(DEP);
        assert_eq!(
            d.load_order("virtio_net"),
            ["failover", "net_failover", "virtio_net"]
        );
        assert_eq!(
            d.load_order("virtio-pci"),
            [
                "virtio_pci_legacy_dev",
                "virtio_pci_modern_dev",
                "virtio_pci"
            ]
        );
        assert_eq!(d.load_order("virtio_blk"), ["virtio_blk"]);
        assert!(d.load_order("builtin_thing").is_empty());
    }

    #[test]
    fn dependency_cycles_terminate() {
        let d = Deps::parse("a.ko: b.ko\nb.ko: a.ko\n");
        let order = d.load_order("a");
        assert_eq!(order.len(), 2);
    }

    #[test]
    fn aliases_match_devices() {
        let a = Aliases::parse(
            "# Aliases extracted from modules themselves.\n\
             alias pci:v00001AF4d00001000sv*sd*bc*sc*i* virtio_pci\n\
             alias virtio:d00000001v* virtio_net\n\
             alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000\n",
        );
        let m: Vec<_> = a.lookup("virtio:d00000001v00001AF4").collect();
        assert_eq!(m, ["virtio_net"]);
        assert_eq!(
            a.lookup("pci:v00008086d0000100Esv1af4sd1100bc02sc00i00")
                .count(),
            1
        );
        assert_eq!(a.lookup("acpi:PNP0A03:").count(), 0);
    }
}
