//! dnsmasq as the DHCP and TFTP server of a test namespace.
//!
//! Boot flow, as on a real site:
//! 1. A firmware that is not iPXE (plain PXE ROM, OVMF's own PXE) is handed
//!    iPXE by TFTP: `undionly.kpxe` (BIOS) or `ipxe.efi` (x86-64 UEFI,
//!    client-arch 7 or 9), copied from `/usr/lib/ipxe` when the `ipxe`
//!    package is installed.
//! 2. iPXE (recognised by DHCP option 175, which only iPXE sends) is handed
//!    TFTP file `drover.ipxe`: `chain <url>`, where the URL is normally
//!    `http://SERVER/boot/${net0/mac}.ipxe`. QEMU's NIC ROMs are iPXE, so
//!    the tests take this path: DHCP, then TFTP, then HTTP.
//!
//! Without the "iPXE gets something else" rule iPXE would fetch and chain
//! itself forever.
//!
//! [`Dnsmasq::start_with_conf`] instead runs dnsmasq from a configuration
//! file alone, e.g. the one `drover-server dnsmasq-config` prints.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use crate::netns::{Netns, BRIDGE};
use crate::procs::{Proc, Procs};
use crate::wait_until;

/// Name of the iPXE script served over TFTP.
pub const IPXE_SCRIPT: &str = "drover.ipxe";

/// Where Debian's `ipxe` package puts its network boot programs.
const IPXE_DIR: &str = "/usr/lib/ipxe";

/// What dnsmasq hands out.
#[derive(Debug, Clone)]
pub struct DnsmasqOptions {
    /// The URL iPXE chains to; `${net0/mac}` and other iPXE settings are
    /// expanded by iPXE.
    pub chain_url: String,
    /// Advertise an IPv6 prefix on the bridge (router advertisements).
    ///
    /// Why: iPXE configures IPv4 (DHCP) and IPv6 (SLAAC) in parallel and its
    /// "Configuring (net0 …)" step waits for both. With no router on the
    /// link, IPv6 gives up only after ~10 s. An RA from dnsmasq ends it at
    /// once: measured 32 s → 18 s from QEMU start to the kernel's `/init`
    /// (BIOS, TCG). The traffic stays on the namespace's bridge.
    pub router_advertisements: bool,
}

impl DnsmasqOptions {
    /// Chain iPXE to `url`, with router advertisements.
    pub fn chain_to(url: impl Into<String>) -> DnsmasqOptions {
        DnsmasqOptions {
            chain_url: url.into(),
            router_advertisements: true,
        }
    }
}

/// ULA prefix advertised when [`DnsmasqOptions::router_advertisements`] is on.
const IPV6_BRIDGE_ADDR: &str = "fd77::1/64";

/// A running dnsmasq; stopped on drop.
pub struct Dnsmasq {
    proc: Proc,
    dir: PathBuf,
}

impl Dnsmasq {
    /// Write the TFTP root and start dnsmasq in `netns` on its bridge. Its
    /// state lives in `<log dir>/dnsmasq/`, kept after the test.
    pub fn start(procs: &Procs, netns: &Netns, opts: &DnsmasqOptions) -> Result<Dnsmasq> {
        let dir = procs.log_dir().join("dnsmasq");
        let tftp = dir.join("tftp");
        std::fs::create_dir_all(&tftp).with_context(|| format!("creating {}", tftp.display()))?;
        let script = format!("#!ipxe\nchain {}\n", opts.chain_url);
        std::fs::write(tftp.join(IPXE_SCRIPT), script)?;
        for prog in ["undionly.kpxe", "ipxe.efi"] {
            let src = Path::new(IPXE_DIR).join(prog);
            if src.exists() {
                std::fs::copy(&src, tftp.join(prog))
                    .with_context(|| format!("copying {}", src.display()))?;
            }
        }
        if opts.router_advertisements {
            // nodad: the address is usable at once, not after ~1 s of DAD.
            netns.ip(&["addr", "add", IPV6_BRIDGE_ADDR, "dev", BRIDGE, "nodad"])?;
        }

        let args = dnsmasq_args(netns, opts, &dir);
        // The TFTP line is the last one dnsmasq logs at startup: the DHCP
        // socket is bound by then.
        Dnsmasq::spawn(procs, netns, "dnsmasq", args, dir, "TFTP root is")
    }

    /// Start dnsmasq in `netns` from the configuration file `conf` alone
    /// (e.g. what `drover-server dnsmasq-config` printed), as an operator
    /// would run it. Added are only flags that manage the process: the
    /// foreground, the log on stderr (`<log dir>/<name>.log`), the lease and
    /// pid files in `<log dir>/<name>/`, no privilege drop (the lease file
    /// is under target/).
    pub fn start_with_conf(
        procs: &Procs,
        netns: &Netns,
        name: &str,
        conf: &Path,
    ) -> Result<Dnsmasq> {
        let dir = procs.log_dir().join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let d = |file: &str| dir.join(file).display().to_string();
        let args = vec![
            "--no-daemon".to_owned(),
            format!("--conf-file={}", conf.display()),
            "--log-facility=-".to_owned(),
            format!("--dhcp-leasefile={}", d("leases")),
            format!("--pid-file={}", d("dnsmasq.pid")),
            "--user=root".to_owned(),
            "--group=root".to_owned(),
        ];
        // Logged after the sockets are bound, whatever the file enables.
        Dnsmasq::spawn(procs, netns, name, args, dir, "started, version")
    }

    /// Run dnsmasq with `args` in `netns`; wait for `ready` in its log.
    fn spawn(
        procs: &Procs,
        netns: &Netns,
        name: &str,
        args: Vec<String>,
        dir: PathBuf,
        ready: &str,
    ) -> Result<Dnsmasq> {
        let mut cmd = Command::new("dnsmasq");
        cmd.args(&args);
        let proc = procs.spawn(name, netns.exec(&cmd))?;
        let dnsmasq = Dnsmasq { proc, dir };
        let ready = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
            dnsmasq.log().contains(ready) || !matches!(dnsmasq.proc.try_wait(), Ok(None))
        });
        if !ready || !matches!(dnsmasq.proc.try_wait(), Ok(None)) {
            bail!(
                "dnsmasq did not start (args: {}); its log {}:\n{}",
                args.join(" "),
                dnsmasq.proc.log_path().display(),
                dnsmasq.log()
            );
        }
        Ok(dnsmasq)
    }

    /// dnsmasq's log so far (`--log-dhcp`: every DHCP exchange and TFTP transfer).
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// The lease file's contents.
    pub fn leases(&self) -> String {
        std::fs::read_to_string(self.dir.join("leases")).unwrap_or_default()
    }

    /// The process guard (pid, log path, exit status).
    pub fn proc(&self) -> &Proc {
        &self.proc
    }
}

/// The command line. Kept in one place, with why for each option.
fn dnsmasq_args(netns: &Netns, opts: &DnsmasqOptions, dir: &Path) -> Vec<String> {
    let subnet = netns.subnet();
    let (lo, hi) = subnet.dhcp_range();
    let d = |name: &str| dir.join(name).display().to_string();
    let mut args = vec![
        // Foreground, so the registry owns it; no config but ours.
        "--no-daemon".to_owned(),
        "--conf-file=/dev/null".to_owned(),
        // DHCP and TFTP only: no DNS.
        "--port=0".to_owned(),
        format!("--interface={BRIDGE}"),
        "--bind-interfaces".to_owned(),
        format!("--dhcp-range={lo},{hi},{},1h", subnet.netmask()),
        // Explicit, so the tests' gateway assertion does not depend on a default.
        format!("--dhcp-option=option:router,{}", subnet.host),
        // Skip the ping before each offer: ~3 s per boot, and nothing else
        // can hold addresses on this private bridge.
        "--no-ping".to_owned(),
        format!("--dhcp-leasefile={}", d("leases")),
        format!("--pid-file={}", d("dnsmasq.pid")),
        // Root keeps access to the TFTP root and lease file under target/
        // (the default user nobody may not traverse there).
        "--user=root".to_owned(),
        "--group=root".to_owned(),
        "--enable-tftp".to_owned(),
        format!("--tftp-root={}", d("tftp")),
        "--log-dhcp".to_owned(),
        "--log-facility=-".to_owned(),
        // Tags: iPXE sends option 175; UEFI x86-64 PXE reports client-arch 7 (or 9).
        "--dhcp-match=set:ipxe,175".to_owned(),
        "--dhcp-match=set:efi64,option:client-arch,7".to_owned(),
        "--dhcp-match=set:efi64,option:client-arch,9".to_owned(),
        // Mutually exclusive tag sets, so rule order does not matter.
        "--dhcp-boot=tag:!ipxe,tag:efi64,ipxe.efi".to_owned(),
        "--dhcp-boot=tag:!ipxe,tag:!efi64,undionly.kpxe".to_owned(),
        format!("--dhcp-boot=tag:ipxe,{IPXE_SCRIPT}"),
    ];
    if opts.router_advertisements {
        args.push("--enable-ra".to_owned());
        args.push(format!("--dhcp-range=::,constructor:{BRIDGE},ra-only"));
    }
    args
}
