//! Boot entries: what a node's firmware runs after DHCP.
//!
//! Pure: the HTTP layer parses the MAC from the request path and hands us
//! the options; we return the iPXE script or the PXELINUX config text. Both
//! boot the same kernel and initrd with the same command line
//! ([`DeployEntry::kernel_cmdline`]).
//!
//! The script fetches kernel and initrd from this server and boots them with
//! the `deploy.*` options rendered by `kernel_cmdline::render`, the same crate
//! the agent parses them with, so the two ends cannot drift apart.

use kernel_cmdline::{MacAddr, Options};

use crate::config::Config;

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

impl DeployEntry {
    /// The entry for `mac` under the config's defaults.
    pub fn for_mac(config: &Config, mac: MacAddr) -> DeployEntry {
        let mut options = config.deploy.clone();
        // The server knows which MAC asked, so it renders BOOTIF itself rather
        // than leaving it to the firmware's `${net0/mac}`: PXELINUX entries
        // (later) get the same line, and the agent brings up exactly the
        // interface that booted.
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

    #[test]
    fn script_shape() {
        let entry = DeployEntry::for_mac(
            &config("image = \"demo\"\non_error = \"poweroff\"", "console=ttyS0"),
            MAC,
        );
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
        let entry = DeployEntry::for_mac(
            &config("image = \"demo\"\non_error = \"poweroff\"", "console=ttyS0"),
            MAC,
        );
        let script = entry.ipxe_script();
        let kernel = script.lines().nth(2).unwrap();
        let words: Vec<&str> = kernel.split(' ').collect();
        for want in [
            "BOOTIF=01-52-54-00-12-34-01",
            "deploy.server=http://10.77.0.1:8080",
            "deploy.image=demo",
            "deploy.on-error=poweroff",
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
        let entry = DeployEntry::for_mac(
            &config(
                "mode = \"chain\"\ndisk = \"/dev/vda\"\nwipe = true\nreboot = \"no\"\nimage = \"deb@12\"",
                "quiet console=ttyS0",
            ),
            MAC,
        );
        // What the agent sees under UEFI: the image name first, then ours.
        let cmdline = format!("vmlinuz initrd=initrd.img {}", entry.kernel_cmdline());
        let parsed = kernel_cmdline::parse(&cmdline).unwrap();
        assert_eq!(parsed, entry.options);
        assert_eq!(parsed.bootif, Some(MAC));
    }

    #[test]
    fn pxelinux_config_shape_and_same_cmdline_as_ipxe() {
        let entry = DeployEntry::for_mac(
            &config("image = \"demo\"\non_error = \"poweroff\"", "console=ttyS0"),
            MAC,
        );
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
        let entry = DeployEntry::for_mac(&config("image = \"deb@12\"", ""), MAC);
        let script = entry.ipxe_script();
        assert!(script.contains("(image deb@12)"), "{script}");
        let kernel = script.lines().nth(2).unwrap();
        assert!(
            !kernel.ends_with(' ') && !kernel.contains("  "),
            "{kernel:?}"
        );
    }
}
