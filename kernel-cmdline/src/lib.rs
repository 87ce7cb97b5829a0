//! The contract between the drover server and its agent: the `deploy.*`
//! options on the kernel command line.
//!
//! Pure: no I/O. [`parse`] takes the text of `/proc/cmdline`, [`render`]
//! produces a command-line fragment that parses back to the same options,
//! [`on_error_hint`] salvages `deploy.on-error` from a line that does not
//! parse, [`split`] is the kernel's tokenizer alone.
//!
//! Rules (the kernel's own, see `lib/cmdline.c: next_arg`):
//! - words are separated by whitespace; double quotes group (`key="a b"` or
//!   `"key=a b"`), and are removed;
//! - the last occurrence of a key wins;
//! - booleans accept `1/0 yes/no true/false on/off`, case-insensitive (and a
//!   bare `deploy.wipe` or `deploy.insecure` means true);
//! - keys outside `deploy.*` belong to the kernel and are ignored, including
//!   a leading bare word such as the image name UEFI puts first; `BOOTIF`
//!   and `ip` are the exceptions, parsed too;
//! - as in the kernel's own parameter names, `_` and `-` are the same in
//!   `deploy.*` keys (`deploy.on_error` is `deploy.on-error`);
//! - keywords are case-insensitive; [`render`] writes canonical lowercase;
//! - an unknown `deploy.*` key, a malformed value or a missing required
//!   option is an [`Error`] naming the key, the bad value and what is
//!   accepted, on one line.
//!
//! Every value type ([`ServerUrl`], [`ImageRef`], [`Mode`], [`DiskSelector`],
//! [`AfterSuccess`], [`OnError`], [`LogLevel`], [`MacAddr`], [`PublicKey`],
//! [`IpConfig`], [`StaticIp`]) implements `FromStr` and `Display`, which
//! round-trip; building [`Options`] from parsed parts keeps it renderable.

// TYPES ARE THE CONTRACT: the agent and server are written against them.
// The implementation lives in the modules below: each value type has
// `FromStr` + `Display` that round-trip, next to its validation rules.

mod error;
mod ident;
mod ip;
mod keyword;
mod options;
mod server_url;
mod tokenize;

use std::net::Ipv4Addr;

pub use error::{Error, InvalidValue};
pub use ident::{is_valid_token, TOKEN_ACCEPTED};
pub use keyword::{bool_str, parse_bool, BOOL_ACCEPTED};
pub use options::{on_error_hint, parse, render, KEYS};
pub use tokenize::split;

/// All options the agent understands, after defaults are applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `deploy.server=URL[,URL…]` (required): base URLs of drover servers, tried in order.
    pub servers: Vec<ServerUrl>,
    /// `deploy.image=NAME[@VERSION]` (required).
    pub image: ImageRef,
    /// `deploy.mode=http|chain|torrent` (default http).
    pub mode: Mode,
    /// `deploy.disk=auto|/dev/…|by-id:ID|serial:S|wwn:W` (default auto).
    pub disk: DiskSelector,
    /// `deploy.wipe=BOOL` (default no): allow overwriting a disk that already has a partition table.
    pub wipe: bool,
    /// `deploy.reboot=yes|poweroff|no` (default yes): what to do after success.
    pub reboot: AfterSuccess,
    /// `deploy.on-error=reboot|poweroff|halt` (default halt).
    pub on_error: OnError,
    /// `deploy.token=TOKEN`: this node's report token.
    pub token: Option<String>,
    /// `deploy.key=HEX`: pin the ed25519 public key (64 hex digits).
    pub key: Option<PublicKey>,
    /// `deploy.insecure=BOOL` (default no): accept unsigned manifests.
    pub insecure: bool,
    /// `deploy.log=info|debug` (default info).
    pub log: LogLevel,
    /// `BOOTIF=01-aa-bb-cc-dd-ee-ff`: the interface the firmware booted from.
    pub bootif: Option<MacAddr>,
    /// `ip=dhcp|off|<static form>` (default dhcp).
    pub ip: IpConfig,
}

/// A server base URL, `http://HOST[:PORT][/PATH]`, kept as written minus a trailing `/`.
///
/// Only `http`: integrity comes from the signed manifest (see `server_url.rs`).
/// Helpers: [`ServerUrl::authority`], [`ServerUrl::join`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerUrl {
    /// An IPv4 address, a DNS name, or an IPv6 address *without* brackets
    /// (so `(host.as_str(), port)` works with `ToSocketAddrs`).
    pub host: String,
    /// 80 unless given.
    pub port: u16,
    /// Path prefix without trailing slash; empty for the root.
    pub path: String,
}

/// `NAME[@VERSION]`, each `[A-Za-z0-9._-]+` and not `.`/`..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// The image name, a directory on the server.
    pub name: String,
    /// `None` means the newest version the server has.
    pub version: Option<String>,
}

/// How the payload travels (`deploy.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// Ranged GETs from the server.
    #[default]
    Http,
    /// Pipelined chain/tree: each node forwards to the next.
    Chain,
    /// BitTorrent swarm seeded by the server.
    Torrent,
}

/// Which disk to install to (`deploy.disk`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum DiskSelector {
    /// The single non-removable disk large enough; ambiguity is an error.
    #[default]
    Auto,
    /// A device path, `/dev/…` (no `..`), e.g. `/dev/nvme0n1` or `/dev/disk/by-id/…`.
    Path(String),
    /// A name under `/dev/disk/by-id/`.
    ById(String),
    /// The disk whose serial number is this (may contain inner spaces:
    /// `deploy.disk="serial:A B"`).
    Serial(String),
    /// The disk whose WWN is this.
    Wwn(String),
}

/// What to do after a successful deploy (`deploy.reboot`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AfterSuccess {
    /// `yes`, `reboot` or a true boolean: boot the installed system.
    #[default]
    Reboot,
    /// `poweroff`.
    Poweroff,
    /// Stay in the agent (debugging).
    None,
}

/// What to do after a failure (`deploy.on-error`); see also [`on_error_hint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OnError {
    /// Reboot (to retry through the network boot).
    Reboot,
    /// Power off.
    Poweroff,
    /// Keep the error on the console: the default, so nobody misses it.
    #[default]
    Halt,
}

/// Agent log verbosity (`deploy.log`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LogLevel {
    /// Milestones and errors.
    #[default]
    Info,
    /// Everything.
    Debug,
}

/// An Ethernet address; `Display` is `aa:bb:cc:dd:ee:ff`, see also
/// [`MacAddr::to_bootif`] and [`MacAddr::from_bootif`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

/// An ed25519 public key; `Display`/`FromStr` as 64 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; 32]);

/// How the agent configures the network (`ip=`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum IpConfig {
    /// `ip=dhcp` (also `on`, `any`), or no `ip=`: DHCP on the boot interface.
    #[default]
    Dhcp,
    /// `ip=off`/`none`: leave the network alone.
    Off,
    Static(StaticIp),
}

/// `ip=<client>:<server>:<gw>:<netmask>:<hostname>:<device>:<autoconf>[:<dns0>[:<dns1>]]`
///
/// `<autoconf>` must be empty, `off` or `none`; fields after `<netmask>` may
/// be left out. `Display` writes all seven fields (autoconf `off`) then the DNS servers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StaticIp {
    /// This node's address: unicast, required.
    pub client: Ipv4Addr,
    /// The kernel's NFS server field; unused by the agent, kept for round trips.
    pub server: Option<Ipv4Addr>,
    /// Default gateway.
    pub gateway: Option<Ipv4Addr>,
    /// A contiguous dotted-quad mask (`255.255.255.0`, not `24`), required.
    pub netmask: Ipv4Addr,
    /// Up to 64 of `[A-Za-z0-9.-]`.
    pub hostname: Option<String>,
    /// Interface name (at most 15 bytes); `None` means the boot interface.
    pub device: Option<String>,
    /// At most two name servers, in order (empty fields are skipped).
    pub dns: Vec<Ipv4Addr>,
}
