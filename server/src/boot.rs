//! Boot entries: what a node's firmware runs after DHCP.
//!
//! Pure: the HTTP layer parses the MAC from the request path, the fleet
//! decides ([`BootDecision`]) whether the node deploys or boots from its
//! disk, and this module renders the iPXE script or the PXELINUX config.
//!
//! A deploy entry fetches kernel and initrd from this server and boots
//! them with the `deploy.*` options rendered by `kernel_cmdline::render`,
//! the same crate the agent parses them with, so the two ends cannot drift
//! apart; iPXE and PXELINUX get the same command line
//! ([`DeployEntry::kernel_cmdline`]). A localboot entry says on the console
//! why the node boots from its disk and hands back to the firmware.

use kernel_cmdline::{ImageRef, MacAddr, Mode, Options};

use crate::clock::rfc3339;
use crate::config::Config;
use crate::state::node::{Node, NodeState};

/// Name the initrd is given inside iPXE and on the kernel command line.
///
/// Under UEFI the kernel's EFI stub only finds an initrd that iPXE
/// registered under a name *and* that the command line names with
/// `initrd=NAME`; without both the kernel panics "Unable to mount root fs"
/// (measured with OVMF, see shared/ENVIRONMENT.md). BIOS ignores the name.
pub const INITRD_NAME: &str = "initrd.img";

/// Everything needed to render one node's deploy entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployEntry {
    /// Base URL of this server, without a trailing `/`.
    pub public_url: String,
    /// The node's MAC (from the request path).
    pub mac: MacAddr,
    /// The node's options; `bootif` is set to `mac`.
    pub options: Options,
    /// Extra kernel arguments, appended last.
    pub kernel_args: String,
}

/// A deployment in progress, as the boot entry carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    /// The pinned image.
    pub image: ImageRef,
    /// `deploy.wipe`.
    pub wipe: bool,
    /// `deploy.mode`, when this deployment chose one.
    pub mode: Option<Mode>,
    /// The report token (`deploy.token`).
    pub token: String,
}

impl DeployEntry {
    /// The entry for `mac` deploying `deployment`, under the config's defaults.
    pub fn new(config: &Config, mac: MacAddr, deployment: &Deployment) -> DeployEntry {
        let mut options = config.deploy.clone();
        options.image = deployment.image.clone();
        options.wipe = deployment.wipe;
        if let Some(mode) = deployment.mode {
            options.mode = mode;
        }
        options.token = Some(deployment.token.clone());
        // The server knows which MAC asked, so it renders BOOTIF itself rather
        // than leaving it to the firmware's `${net0/mac}`: PXELINUX entries
        // get the same line, and the agent brings up exactly the interface
        // that booted.
        options.bootif = Some(mac);
        DeployEntry {
            public_url: config.public_url.clone(),
            mac,
            options,
            kernel_args: config.kernel_args.clone(),
        }
    }

    /// The kernel command line (without the `initrd=` iPXE needs):
    /// `deploy.*` options and `BOOTIF`, then the extra kernel args last,
    /// because `console=` must be last for the console to be the one the
    /// operator watches.
    pub fn kernel_cmdline(&self) -> String {
        let rendered = kernel_cmdline::render(&self.options);
        join_words(&[&rendered, &self.kernel_args])
    }

    /// The iPXE script for this entry.
    pub fn ipxe_script(&self) -> String {
        let url = &self.public_url;
        let image = &self.options.image;
        let kernel_line = join_words(&[
            &format!("kernel {url}/files/vmlinuz"),
            &format!("initrd={INITRD_NAME}"),
            &self.kernel_cmdline(),
        ]);
        format!(
            "#!ipxe\n\
             echo drover: deploying {mac} (image {image})\n\
             {kernel_line}\n\
             initrd --name {INITRD_NAME} {url}/files/{INITRD_NAME}\n\
             boot\n",
            mac = self.mac,
        )
    }
}

/// What PXELINUX asks for that drover answers, for messages.
pub const PXELINUX_NAME_FORM: &str =
    "01-<mac> (ARP type 01, then the MAC with dashes, e.g. 01-52-54-00-12-34-01)";

/// The MAC in a PXELINUX per-MAC config name: `01-aa-bb-cc-dd-ee-ff` (ARP
/// type 01 for Ethernet, then the MAC with dashes; PXELINUX writes it in
/// lower case, either case is accepted). `None` for PXELINUX's other names
/// (the UUID, the IP address in hex and its prefixes, `default`): drover
/// only answers per MAC, so PXELINUX moves on to its next name.
pub fn mac_from_pxelinux_name(name: &str) -> Option<MacAddr> {
    let mac = name.strip_prefix("01-")?;
    // Exactly PXELINUX's form: the MAC parser also takes colons.
    if mac.len() != 17 || mac.contains(':') {
        return None;
    }
    mac.parse().ok()
}

impl DeployEntry {
    /// The PXELINUX config (`pxelinux.cfg/01-<mac>`) for this entry: one
    /// label, booted at once. `lpxelinux.0` fetches `http://` URLs itself.
    /// `INITRD` makes PXELINUX load the initrd; the command line is the
    /// iPXE entry's, `BOOTIF` included (so no `IPAPPEND 2`, which would add
    /// a second `BOOTIF=`).
    pub fn pxelinux_config(&self) -> String {
        let url = &self.public_url;
        format!(
            "# drover: deploying {mac} (image {image})\n\
             DEFAULT drover\n\
             LABEL drover\n\
             \x20 KERNEL {url}/files/vmlinuz\n\
             \x20 INITRD {url}/files/{INITRD_NAME}\n\
             \x20 APPEND {cmdline}\n",
            mac = self.mac,
            image = self.options.image,
            cmdline = self.kernel_cmdline(),
        )
    }
}

/// Why a node boots from its disk instead of deploying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Localboot {
    /// Not registered, and the config registers no one automatically.
    Unknown,
    /// Registered, nothing assigned.
    Idle,
    /// Its last deployment succeeded.
    Done { image: String, at_ms: i64 },
    /// Its last deployment failed.
    Failed {
        image: Option<String>,
        error: String,
    },
    /// Automatic registration could not assign the configured image.
    CannotRegister(String),
}

impl Localboot {
    /// Why `node` boots from its disk; `None` when it has a deployment in
    /// progress (it gets the deploy entry).
    pub fn for_node(node: &Node) -> Option<Localboot> {
        Some(match node.state {
            NodeState::Pending | NodeState::Booting | NodeState::Deploying => return None,
            NodeState::Idle => Localboot::Idle,
            NodeState::Done => Localboot::Done {
                image: node.deployed_image.clone().unwrap_or_else(|| "-".into()),
                at_ms: node.deployed_ms.unwrap_or(node.updated_ms),
            },
            NodeState::Failed => Localboot::Failed {
                image: node.image.clone(),
                error: node
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "no error recorded".into()),
            },
        })
    }

    /// One line for the console: why, and what the operator can do.
    pub fn reason(&self, mac: &MacAddr) -> String {
        match self {
            Localboot::Unknown => format!(
                "unknown machine, booting from disk; to deploy it: drover-server node add {mac}, then drover-server deploy --image NAME {mac}"
            ),
            Localboot::Idle => format!(
                "no deployment assigned, booting from disk; drover-server deploy --image NAME {mac} assigns one"
            ),
            Localboot::Done { image, at_ms } => {
                format!("deployed {image} at {}; booting from disk", rfc3339(*at_ms))
            }
            Localboot::Failed { image, error } => format!(
                "deploy of {} failed: {error}; booting from disk; drover-server deploy --image NAME {mac} retries",
                image.as_deref().unwrap_or("-")
            ),
            Localboot::CannotRegister(error) => format!(
                "{error}; booting from disk; import the image, then drover-server deploy --image NAME {mac}"
            ),
        }
    }
}

/// What the fleet decided for a node that asks for its boot entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootDecision {
    Deploy(Deployment),
    Localboot(Localboot),
}

/// A node's boot entry, ready to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootEntry {
    Deploy(Box<DeployEntry>),
    Localboot { mac: MacAddr, why: Localboot },
}

/// The longest reason put on a console line: an agent's error chain can be
/// kilobytes; the whole of it is in `drover-server node show`.
const MAX_REASON: usize = 400;

impl BootEntry {
    /// The entry for `mac` under `config`.
    pub fn new(config: &Config, mac: MacAddr, decision: BootDecision) -> BootEntry {
        match decision {
            BootDecision::Deploy(d) => {
                BootEntry::Deploy(Box::new(DeployEntry::new(config, mac, &d)))
            }
            BootDecision::Localboot(why) => BootEntry::Localboot { mac, why },
        }
    }

    /// The iPXE script. Localboot is `exit 1`: iPXE returns to the
    /// firmware, which boots the next device in its order (the disk). The
    /// non-zero code matters under UEFI: a boot option that returns
    /// EFI_SUCCESS makes EDK2's boot manager stop and open its menu instead
    /// of trying the next option (seen with OVMF when `ipxe.efi` was the
    /// PXE NBP); BIOS goes on either way.
    pub fn ipxe_script(&self) -> String {
        match self {
            BootEntry::Deploy(d) => d.ipxe_script(),
            BootEntry::Localboot { mac, why } => format!(
                "#!ipxe\necho drover: {mac}: {}\nexit 1\n",
                ipxe_text(&why.reason(mac))
            ),
        }
    }

    /// The PXELINUX config. Localboot is `LOCALBOOT 0`: boot the next device.
    pub fn pxelinux_config(&self) -> String {
        match self {
            BootEntry::Deploy(d) => d.pxelinux_config(),
            BootEntry::Localboot { mac, why } => format!(
                "# drover: {mac}: {}\nDEFAULT local\nLABEL local\n\x20 LOCALBOOT 0\n",
                one_line(&why.reason(mac))
            ),
        }
    }

    /// A short description for the server's log.
    pub fn summary(&self) -> String {
        match self {
            BootEntry::Deploy(d) => format!("deploy {}", d.options.image),
            BootEntry::Localboot { mac, why } => format!("localboot: {}", why.reason(mac)),
        }
    }
}

/// `text` as one line of at most [`MAX_REASON`] bytes: control characters
/// (a newline would end the comment or the `echo`) become spaces.
fn one_line(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    drover_agent::report::protocol::truncate(&line, MAX_REASON)
}

/// `text` safe as the arguments of iPXE's `echo`: one line, and no `$`,
/// which would start a `${setting}` expansion.
fn ipxe_text(text: &str) -> String {
    one_line(text).replace('$', "_")
}

/// Words joined by single spaces, empty ones skipped.
fn join_words(words: &[&str]) -> String {
    words
        .iter()
        .map(|w| w.trim())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x01]);

    /// A config whose `[deploy]` table is `deploy`.
    fn config(deploy: &str, kernel_args: &str) -> Config {
        let text = format!(
            r#"
listen = "10.77.0.1:8080"
public_url = "http://10.77.0.1:8080"
kernel = "/k"
initrd = "/i"
kernel_args = "{kernel_args}"
[deploy]
{deploy}
"#
        );
        Config::parse(&text, Path::new("/"), Path::new("test.toml")).unwrap()
    }

    /// A deployment of `image` (wipe as given) with token `t0k`.
    fn deploying(image: &str, wipe: bool) -> Deployment {
        Deployment {
            image: image.parse().unwrap(),
            wipe,
            mode: None,
            token: "t0k".into(),
        }
    }

    #[test]
    fn a_deployment_s_mode_overrides_the_config_s() {
        let cfg = config("mode = \"chain\"", "");
        let mut d = deploying("demo@1", false);
        assert_eq!(DeployEntry::new(&cfg, MAC, &d).options.mode, Mode::Chain);
        d.mode = Some(Mode::Http);
        let e = DeployEntry::new(&cfg, MAC, &d);
        assert_eq!(e.options.mode, Mode::Http);
        assert!(!e.kernel_cmdline().contains("deploy.mode=chain"));
    }

    /// The deploy entry of `MAC` for `image` under a config.
    fn entry(deploy: &str, kernel_args: &str, image: &str) -> DeployEntry {
        DeployEntry::new(&config(deploy, kernel_args), MAC, &deploying(image, false))
    }

    #[test]
    fn script_shape() {
        let entry = entry("on_error = \"poweroff\"", "console=ttyS0", "demo");
        let script = entry.ipxe_script();
        let lines: Vec<&str> = script.lines().collect();
        assert_eq!(lines.len(), 5, "{script}");
        assert_eq!(lines[0], "#!ipxe");
        assert_eq!(
            lines[1],
            "echo drover: deploying 52:54:00:12:34:01 (image demo)"
        );
        assert!(
            lines[2].starts_with("kernel http://10.77.0.1:8080/files/vmlinuz initrd=initrd.img "),
            "{script}"
        );
        assert_eq!(
            lines[3],
            "initrd --name initrd.img http://10.77.0.1:8080/files/initrd.img"
        );
        assert_eq!(lines[4], "boot");
        assert!(script.ends_with("boot\n"));
    }

    #[test]
    fn kernel_line_carries_options_bootif_and_console_last() {
        let entry = entry("on_error = \"poweroff\"", "console=ttyS0", "demo");
        let script = entry.ipxe_script();
        let kernel = script.lines().nth(2).unwrap();
        let words: Vec<&str> = kernel.split(' ').collect();
        for want in [
            "BOOTIF=01-52-54-00-12-34-01",
            "deploy.server=http://10.77.0.1:8080",
            "deploy.image=demo",
            "deploy.on-error=poweroff",
            "deploy.token=t0k",
        ] {
            assert_eq!(
                words.iter().filter(|w| **w == want).count(),
                1,
                "{want} in {kernel}"
            );
        }
        assert_eq!(words.last(), Some(&"console=ttyS0"), "{kernel}");
    }

    #[test]
    fn kernel_cmdline_parses_back_to_the_options() {
        let entry = DeployEntry::new(
            &config(
                "mode = \"chain\"\ndisk = \"/dev/vda\"\nreboot = \"no\"",
                "quiet console=ttyS0",
            ),
            MAC,
            &deploying("deb@12", true),
        );
        // What the agent sees under UEFI: the image name first, then ours.
        let cmdline = format!("vmlinuz initrd=initrd.img {}", entry.kernel_cmdline());
        let parsed = kernel_cmdline::parse(&cmdline).unwrap();
        assert_eq!(parsed, entry.options);
        assert_eq!(parsed.bootif, Some(MAC));
        assert_eq!(parsed.token.as_deref(), Some("t0k"));
        assert!(parsed.wipe);
        assert_eq!(parsed.image.to_string(), "deb@12");
    }

    #[test]
    fn pxelinux_config_shape_and_same_cmdline_as_ipxe() {
        let entry = entry("on_error = \"poweroff\"", "console=ttyS0", "demo");
        let cfg = entry.pxelinux_config();
        let lines: Vec<&str> = cfg.lines().collect();
        assert_eq!(
            lines,
            [
                "# drover: deploying 52:54:00:12:34:01 (image demo)",
                "DEFAULT drover",
                "LABEL drover",
                "  KERNEL http://10.77.0.1:8080/files/vmlinuz",
                "  INITRD http://10.77.0.1:8080/files/initrd.img",
                &format!("  APPEND {}", entry.kernel_cmdline()),
            ],
            "{cfg}"
        );
        assert!(cfg.ends_with('\n'));
        // The iPXE kernel line is `kernel URL initrd=NAME <the same cmdline>`.
        let script = entry.ipxe_script();
        let ipxe_kernel = script.lines().nth(2).unwrap();
        let append = lines[5].strip_prefix("  APPEND ").unwrap();
        assert_eq!(
            ipxe_kernel,
            format!("kernel http://10.77.0.1:8080/files/vmlinuz initrd=initrd.img {append}")
        );
        let words: Vec<&str> = append.split(' ').collect();
        assert!(words.contains(&"BOOTIF=01-52-54-00-12-34-01"), "{append}");
        assert!(words.contains(&"deploy.on-error=poweroff"), "{append}");
        assert_eq!(words.last(), Some(&"console=ttyS0"), "{append}");
        // What the agent sees: PXELINUX adds `initrd=` for INITRD.
        let cmdline = format!("vmlinuz initrd=http://x/files/initrd.img {append}");
        assert_eq!(kernel_cmdline::parse(&cmdline).unwrap(), entry.options);
    }

    #[test]
    fn pxelinux_names() {
        assert_eq!(mac_from_pxelinux_name("01-52-54-00-12-34-01"), Some(MAC));
        assert_eq!(
            mac_from_pxelinux_name("01-AA-bb-CC-dd-EE-ff"),
            Some(MacAddr([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]))
        );
        for other in [
            "default",
            "0A4D0001",
            "0A4D",
            "0",
            "01-",
            "01-52:54:00:12:34:01",
            "52-54-00-12-34-01",
            "06-52-54-00-12-34-01",
            "01-52-54-00-12-34",
            "01-52-54-00-12-34-01-02",
            "01-52-54-00-12-34-zz",
            "b8945908-d6a6-41a9-611d-74a6ab80b83d",
        ] {
            assert_eq!(mac_from_pxelinux_name(other), None, "{other}");
        }
    }

    #[test]
    fn versioned_image_in_echo_and_no_kernel_args() {
        let entry = entry("", "", "deb@12");
        let script = entry.ipxe_script();
        assert!(script.contains("(image deb@12)"), "{script}");
        let kernel = script.lines().nth(2).unwrap();
        assert!(
            !kernel.ends_with(' ') && !kernel.contains("  "),
            "{kernel:?}"
        );
    }

    fn node(state: NodeState) -> Node {
        let mut n = Node::new(MAC, None, 0);
        n.state = state;
        n.image = Some("demo@1.1".into());
        n.deployed_image = Some("demo@1.0".into());
        n.deployed_ms = Some(1_793_611_800_000);
        n.last_error = Some("disk: no disk\nlarge enough ${x}".into());
        n
    }

    #[test]
    fn localboot_per_node_state() {
        let cases: [(NodeState, Option<Localboot>); 6] = [
            (NodeState::Idle, Some(Localboot::Idle)),
            (NodeState::Pending, None),
            (NodeState::Booting, None),
            (NodeState::Deploying, None),
            (
                NodeState::Done,
                Some(Localboot::Done {
                    image: "demo@1.0".into(),
                    at_ms: 1_793_611_800_000,
                }),
            ),
            (
                NodeState::Failed,
                Some(Localboot::Failed {
                    image: Some("demo@1.1".into()),
                    error: "disk: no disk\nlarge enough ${x}".into(),
                }),
            ),
        ];
        for (state, want) in cases {
            assert_eq!(Localboot::for_node(&node(state)), want, "{state}");
        }
    }

    #[test]
    fn localboot_entries() {
        let cases = [
            (
                Localboot::Unknown,
                "unknown machine, booting from disk; to deploy it: drover-server node add 52:54:00:12:34:01, then drover-server deploy --image NAME 52:54:00:12:34:01",
            ),
            (
                Localboot::Idle,
                "no deployment assigned, booting from disk; drover-server deploy --image NAME 52:54:00:12:34:01 assigns one",
            ),
            (
                Localboot::Done {
                    image: "demo@1.0".into(),
                    at_ms: 1_793_611_800_000,
                },
                "deployed demo@1.0 at 2026-11-02T09:30:00Z; booting from disk",
            ),
            (
                Localboot::Failed {
                    image: Some("demo@1.1".into()),
                    error: "disk: no disk\nlarge enough ${x}".into(),
                },
                // One line, and no iPXE setting expansion.
                "deploy of demo@1.1 failed: disk: no disk large enough _{x}; booting from disk; drover-server deploy --image NAME 52:54:00:12:34:01 retries",
            ),
            (
                Localboot::CannotRegister("cannot assign the configured image demo: gone".into()),
                "cannot assign the configured image demo: gone; booting from disk; import the image, then drover-server deploy --image NAME 52:54:00:12:34:01",
            ),
        ];
        let config = config("", "");
        for (why, reason) in cases {
            let entry = BootEntry::new(&config, MAC, BootDecision::Localboot(why.clone()));
            assert_eq!(
                entry.ipxe_script(),
                format!("#!ipxe\necho drover: 52:54:00:12:34:01: {reason}\nexit 1\n"),
                "{why:?}"
            );
            let pxe = entry.pxelinux_config();
            assert_eq!(
                pxe.lines().skip(1).collect::<Vec<_>>(),
                ["DEFAULT local", "LABEL local", "  LOCALBOOT 0"],
                "{pxe}"
            );
            let comment = pxe.lines().next().unwrap();
            assert!(
                comment.starts_with("# drover: 52:54:00:12:34:01: "),
                "{comment}"
            );
            assert!(entry.summary().starts_with("localboot: "));
        }
    }

    #[test]
    fn long_reasons_are_cut() {
        let why = Localboot::CannotRegister("x".repeat(5000));
        let script =
            BootEntry::new(&config("", ""), MAC, BootDecision::Localboot(why)).ipxe_script();
        let echo = script.lines().nth(1).unwrap();
        assert!(echo.len() < MAX_REASON + 40, "{}", echo.len());
        assert!(echo.ends_with('…'), "{echo}");
    }

    #[test]
    fn deploy_decision_renders_the_deploy_entry() {
        let entry = BootEntry::new(
            &config("", ""),
            MAC,
            BootDecision::Deploy(deploying("demo@1.0", false)),
        );
        assert!(
            entry
                .ipxe_script()
                .starts_with("#!ipxe\necho drover: deploying 52:54:00:12:34:01 (image demo@1.0)\n"),
            "{}",
            entry.ipxe_script()
        );
        assert!(entry.pxelinux_config().contains("deploy.token=t0k"));
        assert_eq!(entry.summary(), "deploy demo@1.0");
    }
}
