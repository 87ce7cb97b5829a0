//! `dnsmasq-config`: a dnsmasq configuration that boots nodes into drover.
//!
//! Pure: [`render`] turns validated [`DnsmasqSettings`] into the file's text;
//! the CLI parses the flags (with [`parse_dhcp_range`] and
//! [`DhcpMode::from_flags`]) and prints it.
//!
//! The chain: the firmware's PXE client gets iPXE over TFTP (`undionly.kpxe`
//! for BIOS, `ipxe.efi` for x86-64 UEFI, from Debian's `ipxe` package in
//! `/usr/lib/ipxe`); iPXE does DHCP again, now with option 175, and is sent
//! to `PUBLIC/boot/${net0/mac}.ipxe` on this server.
//!
//! In proxy mode both steps are PXE boot services (`pxe-service`), one per
//! client architecture (x86PC; BC_EFI and x86-64_EFI, dnsmasq's names for
//! client-arch 7 and 9): dnsmasq leaves the next-server address out of a
//! proxy answer built from `dhcp-boot`, which older iPXE rejects.
//!
//! Both modes boot a VM in qemu-tests/tests/dnsmasq_config.rs.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Where Debian's `ipxe` package installs `undionly.kpxe` and `ipxe.efi`.
pub const DEFAULT_TFTP_ROOT: &str = "/usr/lib/ipxe";

/// iPXE for BIOS PXE clients (uses the NIC's UNDI driver).
pub const BIOS_IPXE: &str = "undionly.kpxe";
/// iPXE for x86-64 UEFI clients.
pub const EFI_IPXE: &str = "ipxe.efi";

/// A DHCP range: first and last address, optional netmask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DhcpRange {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
    pub mask: Option<Ipv4Addr>,
}

/// Who hands out addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DhcpMode {
    /// dnsmasq is the DHCP server and leases from this range.
    Range(DhcpRange),
    /// The site has its own DHCP server; dnsmasq only adds boot information
    /// (proxy DHCP) for clients on this subnet.
    Proxy(Ipv4Addr),
}

impl DhcpMode {
    /// Exactly one of `--dhcp-range` and `--proxy`.
    pub fn from_flags(
        range: Option<DhcpRange>,
        proxy: Option<Ipv4Addr>,
    ) -> Result<DhcpMode, String> {
        match (range, proxy) {
            (Some(range), None) => Ok(DhcpMode::Range(range)),
            (None, Some(subnet)) => Ok(DhcpMode::Proxy(subnet)),
            (Some(_), Some(_)) => Err(
                "--dhcp-range and --proxy exclude each other: --dhcp-range when dnsmasq is the DHCP server, --proxy SUBNET when the site has its own".into(),
            ),
            (None, None) => Err(
                "one of --dhcp-range START,END[,MASK] (dnsmasq is the DHCP server) or --proxy SUBNET (the site has its own DHCP server) is required".into(),
            ),
        }
    }
}

/// Everything [`render`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsmasqSettings {
    /// The config's `public_url`, without a trailing `/`.
    pub public_url: String,
    pub mode: DhcpMode,
    /// Serve DHCP/TFTP on this interface only.
    pub interface: Option<String>,
    /// The TFTP root holding `undionly.kpxe` and `ipxe.efi`.
    pub tftp_root: PathBuf,
}

/// `--dhcp-range START,END[,MASK]`.
pub fn parse_dhcp_range(text: &str) -> Result<DhcpRange, String> {
    const ACCEPTED: &str = "accepted: START,END[,MASK] of IPv4 addresses, e.g. 10.77.0.100,10.77.0.199 or 10.77.0.100,10.77.0.199,255.255.255.0";
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    if !(2..=3).contains(&parts.len()) {
        return Err(format!(
            "{text:?}: expected 2 or 3 comma-separated addresses; {ACCEPTED}"
        ));
    }
    let addr = |what: &str, s: &str| {
        s.parse::<Ipv4Addr>()
            .map_err(|_| format!("{what} {s:?} is not an IPv4 address; {ACCEPTED}"))
    };
    let start = addr("START", parts[0])?;
    let end = addr("END", parts[1])?;
    if start > end {
        return Err(format!("START {start} is after END {end}; {ACCEPTED}"));
    }
    let mask = match parts.get(2) {
        None => None,
        Some(s) => {
            let mask = addr("MASK", s)?;
            let bits = u32::from(mask);
            // Contiguous ones from the top, and not all zeros.
            if bits == 0 || bits.leading_ones() + bits.trailing_zeros() != 32 {
                return Err(format!(
                    "MASK {mask} is not a netmask (e.g. 255.255.255.0); {ACCEPTED}"
                ));
            }
            if u32::from(start) & bits != u32::from(end) & bits {
                return Err(format!(
                    "START {start} and END {end} are not in one subnet of mask {mask}; {ACCEPTED}"
                ));
            }
            Some(mask)
        }
    };
    Ok(DhcpRange { start, end, mask })
}

/// `--proxy SUBNET`: the network address of the subnet to answer on.
pub fn parse_proxy_subnet(text: &str) -> Result<Ipv4Addr, String> {
    text.trim().parse::<Ipv4Addr>().map_err(|_| {
        format!("{text:?} is not an IPv4 address; accepted: the subnet's network address, e.g. 10.77.0.0")
    })
}

/// `--interface IF`: a Linux interface name.
pub fn parse_interface(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= 15
        && text
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '/' | ',' | '#' | '='));
    if ok {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?}: accepted: a network interface name, 1 to 15 characters, no spaces, '/', ',', '#' or '=' (e.g. eth0, enp1s0)"
        ))
    }
}

/// `--tftp-root DIR`: an absolute path, one line, no `,` or `#`.
pub fn parse_tftp_root(text: &str) -> Result<PathBuf, String> {
    let path = Path::new(text);
    if !path.is_absolute() || text.contains(['\n', '\r', ',', '#']) {
        return Err(format!(
            "{text:?}: accepted: an absolute directory path without ',' or '#' (default {DEFAULT_TFTP_ROOT})"
        ));
    }
    Ok(path.to_owned())
}

/// The boot-entry URL iPXE is given, `${net0/mac}` left for iPXE to fill.
pub fn boot_entry_url(public_url: &str) -> String {
    format!("{public_url}/boot/${{net0/mac}}.ipxe")
}

/// The URL travels in the 128-byte BOOTP `file` field (NUL-terminated),
/// both as dnsmasq's `dhcp-boot` and in a proxy's PXE boot-server reply:
/// a longer one would be cut short without a word.
pub fn check_boot_url(public_url: &str) -> Result<(), String> {
    let url = boot_entry_url(public_url);
    if url.len() > 127 {
        return Err(format!(
            "the boot entry URL {url:?} is {} bytes; DHCP carries at most 127 (the BOOTP file field): \
             use a shorter public_url ({} bytes at most)",
            url.len(),
            127 - (url.len() - public_url.len())
        ));
    }
    Ok(())
}

/// The dnsmasq configuration text, one comment per setting.
pub fn render(s: &DnsmasqSettings) -> String {
    let mode_name = match s.mode {
        DhcpMode::Range(_) => "DHCP server",
        DhcpMode::Proxy(_) => "proxy DHCP: the site's DHCP server hands out addresses",
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# dnsmasq configuration for drover ({mode_name}), from `drover-server dnsmasq-config`.\n\
         # Firmware PXE gets iPXE over TFTP; iPXE gets its boot entry from {url}.\n",
        url = s.public_url
    );

    let mut line = |comment: &str, setting: &str| {
        for c in comment.lines() {
            let _ = writeln!(out, "# {c}");
        }
        let _ = writeln!(out, "{setting}\n");
    };
    line(
        "No DNS server: dnsmasq only does DHCP and TFTP here.",
        "port=0",
    );
    if let Some(interface) = &s.interface {
        line(
            "Answer DHCP and TFTP on this interface only.",
            &format!("interface={interface}"),
        );
        line(
            "Bind the sockets to it alone, so this dnsmasq can run next to another one on the\n\
             host (e.g. libvirt's): without this, \"failed to bind DHCP server socket: Address\n\
             already in use\". bind-dynamic also tolerates the interface coming up later.",
            "bind-dynamic",
        );
    }
    line(
        "Log every DHCP exchange (syslog or journal): what to read when a node does not boot.",
        "log-dhcp",
    );
    match s.mode {
        DhcpMode::Range(r) => {
            let mask = r.mask.map(|m| format!(",{m}")).unwrap_or_default();
            line(
                "Lease addresses from this range, for 12 hours.",
                &format!("dhcp-range={},{}{mask},12h", r.start, r.end),
            );
        }
        DhcpMode::Proxy(subnet) => line(
            "Proxy DHCP: no addresses, only boot information, for clients on this subnet;\n\
             the site's own DHCP server still leases the addresses.",
            &format!("dhcp-range={subnet},proxy"),
        ),
    }
    line(
        "dnsmasq's own TFTP server, for the firmware to fetch iPXE.",
        "enable-tftp",
    );
    line(
        &format!(
            "Where {BIOS_IPXE} and {EFI_IPXE} are (Debian: `apt install ipxe` puts them in {DEFAULT_TFTP_ROOT})."
        ),
        &format!("tftp-root={}", s.tftp_root.display()),
    );
    line(
        "Tag iPXE itself: it sends DHCP option 175; firmware PXE does not.",
        "dhcp-match=set:ipxe,175",
    );
    let boot_entry = boot_entry_url(&s.public_url);
    match s.mode {
        DhcpMode::Range(_) => {
            line(
                "Tag x86-64 UEFI clients (client architecture 7, and 9 which some firmware sends).",
                "dhcp-match=set:efi64,option:client-arch,7\ndhcp-match=set:efi64,option:client-arch,9",
            );
            line(
                &format!("BIOS firmware PXE (neither tag): chainload iPXE, {BIOS_IPXE}."),
                &format!("dhcp-boot=tag:!ipxe,tag:!efi64,{BIOS_IPXE}"),
            );
            line(
                &format!("UEFI firmware PXE: chainload iPXE, {EFI_IPXE}."),
                &format!("dhcp-boot=tag:!ipxe,tag:efi64,{EFI_IPXE}"),
            );
            line(
                "iPXE: fetch this node's boot entry from drover. iPXE fills in ${net0/mac}\n\
                 (URL-encoding the colons; drover decodes them).",
                &format!("dhcp-boot=tag:ipxe,{boot_entry}"),
            );
        }
        DhcpMode::Proxy(_) => {
            line(
                &format!(
                    "BIOS firmware PXE (client type x86PC): chainload iPXE, {BIOS_IPXE}.\n\
                     Not for iPXE (tag:!ipxe): it would load itself again, forever."
                ),
                &format!("pxe-service=tag:!ipxe,x86PC,\"drover\",{BIOS_IPXE}"),
            );
            line(
                &format!(
                    "x86-64 UEFI firmware PXE: chainload iPXE, {EFI_IPXE}. dnsmasq calls client\n\
                     architecture 7 BC_EFI and 9 x86-64_EFI; x86-64 UEFI firmware sends 7 (OVMF does),\n\
                     some send 9."
                ),
                &format!(
                    "pxe-service=tag:!ipxe,BC_EFI,\"drover\",{EFI_IPXE}\n\
                     pxe-service=tag:!ipxe,x86-64_EFI,\"drover\",{EFI_IPXE}"
                ),
            );
            line(
                "iPXE: its boot service is this node's boot entry on drover. iPXE fills in\n\
                 ${net0/mac} (URL-encoding the colons; drover decodes them).\n\
                 A boot service, not dhcp-boot: in proxy mode dnsmasq sends no next-server\n\
                 address with a dhcp-boot file, and iPXE builds such as QEMU's and Debian's\n\
                 (2019) ignore a proxy answer without one (\"Nothing to boot\").",
                &format!(
                    "pxe-service=tag:ipxe,x86PC,\"drover\",{boot_entry}\n\
                     pxe-service=tag:ipxe,BC_EFI,\"drover\",{boot_entry}\n\
                     pxe-service=tag:ipxe,x86-64_EFI,\"drover\",{boot_entry}"
                ),
            );
        }
    }
    // One blank line between settings, none at the end.
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_boot_url_too_long_for_dhcp_is_refused() {
        let fits = format!("http://{}", "a".repeat(127 - 22 - 7));
        assert_eq!(check_boot_url(&fits), Ok(()));
        let e = check_boot_url(&format!("{fits}b")).unwrap_err();
        assert!(e.contains("is 128 bytes; DHCP carries at most 127"), "{e}");
        assert!(e.contains("(105 bytes at most)"), "{e}");
    }

    fn settings(mode: DhcpMode) -> DnsmasqSettings {
        DnsmasqSettings {
            public_url: "http://10.77.0.1:8080".into(),
            mode,
            interface: Some("eth1".into()),
            tftp_root: PathBuf::from(DEFAULT_TFTP_ROOT),
        }
    }

    /// The settings, without comments and blank lines.
    fn settings_of(text: &str) -> Vec<&str> {
        text.lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    }

    #[test]
    fn dhcp_server_mode() {
        let range = parse_dhcp_range("10.77.0.100,10.77.0.199,255.255.255.0").unwrap();
        let text = render(&settings(DhcpMode::Range(range)));
        assert_eq!(
            settings_of(&text),
            [
                "port=0",
                "interface=eth1",
                "bind-dynamic",
                "log-dhcp",
                "dhcp-range=10.77.0.100,10.77.0.199,255.255.255.0,12h",
                "enable-tftp",
                "tftp-root=/usr/lib/ipxe",
                "dhcp-match=set:ipxe,175",
                "dhcp-match=set:efi64,option:client-arch,7",
                "dhcp-match=set:efi64,option:client-arch,9",
                "dhcp-boot=tag:!ipxe,tag:!efi64,undionly.kpxe",
                "dhcp-boot=tag:!ipxe,tag:efi64,ipxe.efi",
                "dhcp-boot=tag:ipxe,http://10.77.0.1:8080/boot/${net0/mac}.ipxe",
            ],
            "{text}"
        );
        assert!(!text.contains("proxy"), "{text}");
        assert!(!text.contains("pxe-service"), "{text}");
    }

    #[test]
    fn proxy_mode() {
        let mut s = settings(DhcpMode::Proxy(parse_proxy_subnet("10.0.0.0").unwrap()));
        s.interface = None;
        s.tftp_root = PathBuf::from("/srv/tftp");
        s.public_url = "http://boot.example/drover".into();
        let text = render(&s);
        assert_eq!(
            settings_of(&text),
            [
                "port=0",
                "log-dhcp",
                "dhcp-range=10.0.0.0,proxy",
                "enable-tftp",
                "tftp-root=/srv/tftp",
                "dhcp-match=set:ipxe,175",
                "pxe-service=tag:!ipxe,x86PC,\"drover\",undionly.kpxe",
                "pxe-service=tag:!ipxe,BC_EFI,\"drover\",ipxe.efi",
                "pxe-service=tag:!ipxe,x86-64_EFI,\"drover\",ipxe.efi",
                "pxe-service=tag:ipxe,x86PC,\"drover\",http://boot.example/drover/boot/${net0/mac}.ipxe",
                "pxe-service=tag:ipxe,BC_EFI,\"drover\",http://boot.example/drover/boot/${net0/mac}.ipxe",
                "pxe-service=tag:ipxe,x86-64_EFI,\"drover\",http://boot.example/drover/boot/${net0/mac}.ipxe",
            ],
            "{text}"
        );
        assert!(text.contains("Proxy DHCP"), "{text}");
        // No interface, no socket binding option; no dhcp-boot in proxy mode.
        assert!(
            !settings_of(&text)
                .iter()
                .any(|l| l.starts_with("bind-") || l.starts_with("dhcp-boot")),
            "{text}"
        );
    }

    #[test]
    fn every_setting_has_a_comment_and_layout_is_tidy() {
        let range = parse_dhcp_range("10.77.0.100,10.77.0.199").unwrap();
        for mode in [
            DhcpMode::Range(range),
            DhcpMode::Proxy(Ipv4Addr::new(10, 0, 0, 0)),
        ] {
            let text = render(&settings(mode));
            assert!(
                text.starts_with("# dnsmasq configuration for drover ("),
                "{text}"
            );
            assert!(text.ends_with(".ipxe\n"), "{text:?}");
            assert!(!text.contains("\n\n\n"), "{text:?}");
            assert!(!text.lines().any(|l| l.ends_with(' ')), "{text:?}");
            // Each block of settings is preceded by a comment line.
            for block in text.split("\n\n").skip(1) {
                assert!(block.starts_with("# "), "uncommented: {block:?}");
            }
        }
        let text = render(&settings(DhcpMode::Range(range)));
        assert!(
            text.contains("dhcp-range=10.77.0.100,10.77.0.199,12h\n"),
            "{text}"
        );
    }

    #[test]
    fn range_validation() {
        assert_eq!(
            parse_dhcp_range(" 10.0.0.5 , 10.0.0.9 ").unwrap(),
            DhcpRange {
                start: Ipv4Addr::new(10, 0, 0, 5),
                end: Ipv4Addr::new(10, 0, 0, 9),
                mask: None
            }
        );
        let cases = [
            ("10.0.0.5", "expected 2 or 3 comma-separated addresses"),
            ("1,2,3,4", "expected 2 or 3"),
            (
                "10.0.0.x,10.0.0.9",
                "START \"10.0.0.x\" is not an IPv4 address",
            ),
            ("10.0.0.5,", "END \"\" is not an IPv4 address"),
            ("10.0.0.9,10.0.0.5", "START 10.0.0.9 is after END 10.0.0.5"),
            (
                "10.0.0.5,10.0.0.9,255.0.255.0",
                "MASK 255.0.255.0 is not a netmask",
            ),
            ("10.0.0.5,10.0.0.9,0.0.0.0", "is not a netmask"),
            (
                "10.0.0.5,10.0.1.9,255.255.255.0",
                "are not in one subnet of mask 255.255.255.0",
            ),
        ];
        for (text, want) in cases {
            let e = parse_dhcp_range(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
            assert!(e.contains("accepted: START,END[,MASK]"), "{text}: {e}");
        }
    }

    #[test]
    fn other_flag_validation() {
        assert!(parse_proxy_subnet("10.0.0.0/24")
            .unwrap_err()
            .contains("accepted: the subnet's network address"));
        assert_eq!(parse_interface("enp1s0").unwrap(), "enp1s0");
        for bad in ["", "eth 0", "a/b", "abcdefghijklmnop"] {
            assert!(
                parse_interface(bad)
                    .unwrap_err()
                    .contains("accepted: a network interface name"),
                "{bad}"
            );
        }
        assert_eq!(
            parse_tftp_root("/srv/tftp").unwrap(),
            PathBuf::from("/srv/tftp")
        );
        for bad in ["srv/tftp", "/a,b", "/a\nb"] {
            assert!(
                parse_tftp_root(bad)
                    .unwrap_err()
                    .contains("accepted: an absolute directory path"),
                "{bad:?}"
            );
        }
        let range = parse_dhcp_range("10.0.0.5,10.0.0.9").unwrap();
        let subnet = Ipv4Addr::new(10, 0, 0, 0);
        assert_eq!(
            DhcpMode::from_flags(Some(range), None),
            Ok(DhcpMode::Range(range))
        );
        assert_eq!(
            DhcpMode::from_flags(None, Some(subnet)),
            Ok(DhcpMode::Proxy(subnet))
        );
        assert!(DhcpMode::from_flags(Some(range), Some(subnet))
            .unwrap_err()
            .contains("exclude each other"));
        assert!(DhcpMode::from_flags(None, None)
            .unwrap_err()
            .contains("one of --dhcp-range START,END[,MASK]"));
    }
}
