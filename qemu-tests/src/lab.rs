//! A PXE network in a box: a namespace with a bridge and `tap0`,
//! drover-server, and dnsmasq (DHCP + TFTP) chaining iPXE to the server.
//! What every netboot test and the demo start with.

use std::path::Path;

use anyhow::Result;

use crate::dnsmasq::{Dnsmasq, DnsmasqOptions};
use crate::netns::{Netns, Subnet};
use crate::procs::Procs;
use crate::qemu::VmBuilder;
use crate::server::{Server, ServerConfig};

/// Fields drop in order: dnsmasq and the server stop before the namespace
/// is deleted.
pub struct PxeLab {
    pub dnsmasq: Dnsmasq,
    pub server: Server,
    pub config: ServerConfig,
    pub ns: Netns,
}

impl PxeLab {
    /// Start it; `config` builds the server's configuration for the new
    /// namespace (kernel, initrd, store, deploy options).
    pub fn start(
        procs: &Procs,
        server_bin: &Path,
        config: impl FnOnce(&Netns) -> ServerConfig,
    ) -> Result<PxeLab> {
        let ns = Netns::create("drover-qt", Subnet::default())?;
        ns.add_tap("tap0")?;
        let config = config(&ns);
        let server = Server::start(procs, &ns, server_bin, config.clone())?;
        let dnsmasq = Dnsmasq::start(procs, &ns, &DnsmasqOptions::chain_to(config.chain_url()))?;
        Ok(PxeLab {
            dnsmasq,
            server,
            config,
            ns,
        })
    }

    /// A VM on `tap0` that boots from the network first.
    pub fn vm(&self, name: &str) -> VmBuilder {
        VmBuilder::new(name).tap(&self.ns, "tap0").netboot()
    }

    /// Another VM on the same network: on a new tap `ifname` (not `tap0`)
    /// of the bridge, booting from the network first.
    pub fn vm_on_tap(&self, name: &str, ifname: &str) -> Result<VmBuilder> {
        self.ns.add_tap(ifname)?;
        Ok(VmBuilder::new(name).tap(&self.ns, ifname).netboot())
    }
}
