//! Command-line interface: argh structs and the dispatch `main` calls.
//!
//! ```text
//! drover-server serve --config FILE
//! drover-server dnsmasq-config --config FILE [--interface IF]
//!                              [--dhcp-range START,END[,MASK]] [--proxy SUBNET] [--tftp-root DIR]
//! drover-server key generate --out DIR [--force]
//! drover-server image import --store DIR --name NAME --version VERSION --key FILE
//!                            [--chunk-size SIZE] [--level N] [--piece-length SIZE]
//!                            [--bios-boot-code FILE]
//!                            --partition SPEC [--partition SPEC…]
//! drover-server image list --store DIR
//! drover-server image show --store DIR NAME[@VERSION]
//! drover-server image verify --store DIR --key PUBFILE NAME[@VERSION]
//! drover-server node add --config FILE MAC [--name NAME]
//! drover-server node list --config FILE [--json]
//! drover-server node show --config FILE NODE [--json]
//! drover-server node remove --config FILE NODE
//! drover-server deploy --config FILE --image NAME[@VERSION] [--wipe] NODE…
//! drover-server status --config FILE [--watch] [--interval SECS]
//! ```
//!
//! `node`, `deploy` and `status` talk to the running server's admin API
//! (each also takes `--server URL` and `--token-file FILE`).

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use argh::FromArgs;
use drover_agent::chain::SessionId;
use drover_agent::image::manifest::{CHUNK_ALIGN, DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE};
use drover_agent::image::{sign, BuildOptions};
use drover_agent::torrent::metainfo::check_piece_length;
use kernel_cmdline::ImageRef;

use crate::admin_client::AdminClient;
use crate::api::{AddNode, DeployRequest, Node, NodeList};
use crate::config::Config;
use crate::dnsmasq::{DhcpMode, DhcpRange, DnsmasqSettings};
use crate::image_report::{import_summary, list_report, read_manifest, show_report, torrent_line};
use crate::image_verify::verify_dir;
use crate::import::{import, ImportRequest};
use crate::partition_spec::parse_layout;
use crate::size::{parse_size, Human, SIZE_ACCEPTED};
use crate::store::Store;
use crate::{fleet_text, status};

/// drover server: images, fleet state and boot entries for network deploys.
#[derive(FromArgs, Debug)]
pub struct Args {
    #[argh(subcommand)]
    pub command: Command,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Command {
    Serve(ServeArgs),
    DnsmasqConfig(DnsmasqConfigArgs),
    Key(KeyArgs),
    Image(ImageArgs),
    Node(NodeArgs),
    Deploy(DeployArgs),
    Status(StatusArgs),
    Chain(ChainArgs),
}

/// Chain-mode sessions: see one, or start it without waiting for more nodes.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "chain")]
pub struct ChainArgs {
    #[argh(subcommand)]
    pub command: ChainCommand,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum ChainCommand {
    Status(ChainStatusArgs),
    Start(ChainStartArgs),
}

/// A chain session's nodes in chain order: state, upstream, chunks received and written, last event.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "status",
    example = "{command_name} --config /etc/drover/server.toml demo@1.0"
)]
pub struct ChainStatusArgs {
    /// the server's TOML config file (public_url, state directory)
    #[argh(option)]
    pub config: PathBuf,
    /// the server's URL (default: the config's public_url)
    #[argh(option)]
    pub server: Option<String>,
    /// the admin token file (default: admin.token in the config's state directory)
    #[argh(option)]
    pub token_file: Option<PathBuf>,
    /// the session: the deployed image as NAME@VERSION
    #[argh(positional)]
    pub session: SessionId,
}

/// Start a chain session now with the nodes that joined (late ones join its tail).
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "start",
    note = "A session starts by itself when every node of its deploy joined, or [chain] join_timeout
seconds after the first join; this starts it at once."
)]
pub struct ChainStartArgs {
    /// the server's TOML config file (public_url, state directory)
    #[argh(option)]
    pub config: PathBuf,
    /// the server's URL (default: the config's public_url)
    #[argh(option)]
    pub server: Option<String>,
    /// the admin token file (default: admin.token in the config's state directory)
    #[argh(option)]
    pub token_file: Option<PathBuf>,
    /// the session: the deployed image as NAME@VERSION
    #[argh(positional)]
    pub session: SessionId,
}

/// Serve boot entries (/boot/MAC.ipxe), the kernel/initrd, the image store, node reports, the admin API and /metrics over HTTP.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "serve",
    note = "The state directory (config key state, default: state next to the config file) is created
with mode 0700 on first start; it holds drover.sqlite (the fleet) and admin.token (made on first
start, mode 0600), which the node, deploy and status commands send."
)]
pub struct ServeArgs {
    /// the TOML config file
    #[argh(option)]
    pub config: PathBuf,
}

/// Print a dnsmasq configuration (DHCP or proxy DHCP, TFTP) that chainloads iPXE and sends it to this server's boot entries.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "dnsmasq-config",
    example = "{command_name} --config /etc/drover/server.toml --interface eth1 --dhcp-range 10.77.0.100,10.77.0.199 > /etc/dnsmasq.d/drover.conf",
    example = "{command_name} --config /etc/drover/server.toml --proxy 10.0.0.0 > /etc/dnsmasq.d/drover.conf",
    note = "Exactly one of --dhcp-range (dnsmasq leases the addresses) and --proxy (the site's own DHCP
server leases them; dnsmasq only adds boot information). BIOS clients get undionly.kpxe, x86-64
UEFI clients ipxe.efi over TFTP (Debian: apt install ipxe); iPXE then fetches
PUBLIC_URL/boot/${{net0/mac}}.ipxe, PUBLIC_URL being the config's public_url."
)]
pub struct DnsmasqConfigArgs {
    /// the server's TOML config file (for public_url)
    #[argh(option)]
    pub config: PathBuf,
    /// answer DHCP and TFTP on this interface only (default: all)
    #[argh(option, from_str_fn(parse_interface))]
    pub interface: Option<String>,
    /// lease addresses START to END (netmask MASK): dnsmasq is the DHCP server
    #[argh(option, from_str_fn(parse_dhcp_range))]
    pub dhcp_range: Option<DhcpRange>,
    /// proxy DHCP on the subnet with this network address (e.g. 10.0.0.0): the site has its own DHCP server
    #[argh(option, from_str_fn(parse_proxy_subnet))]
    pub proxy: Option<std::net::Ipv4Addr>,
    /// TFTP root holding undionly.kpxe and ipxe.efi (default /usr/lib/ipxe)
    #[argh(option, from_str_fn(parse_tftp_root))]
    pub tftp_root: Option<PathBuf>,
}

// argh's `from_str_fn` wants plain fns of `&str`.
fn parse_interface(text: &str) -> Result<String, String> {
    crate::dnsmasq::parse_interface(text)
}
fn parse_dhcp_range(text: &str) -> Result<DhcpRange, String> {
    crate::dnsmasq::parse_dhcp_range(text)
}
fn parse_proxy_subnet(text: &str) -> Result<std::net::Ipv4Addr, String> {
    crate::dnsmasq::parse_proxy_subnet(text)
}
fn parse_tftp_root(text: &str) -> Result<PathBuf, String> {
    crate::dnsmasq::parse_tftp_root(text)
}

/// Image signing keys.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "key")]
pub struct KeyArgs {
    #[argh(subcommand)]
    pub command: KeyCommand,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum KeyCommand {
    Generate(KeyGenerateArgs),
}

/// Generate an ed25519 key pair: DIR/drover.key (secret, mode 0600) signs images, DIR/drover.pub (64 hex digits) is what nodes trust.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "generate",
    note = "An existing key is never replaced without --force: nodes that trust it would refuse images signed by the new one."
)]
pub struct KeyGenerateArgs {
    /// directory for drover.key and drover.pub (created if missing)
    #[argh(option)]
    pub out: PathBuf,
    /// replace an existing key pair
    #[argh(switch)]
    pub force: bool,
}

/// Build, inspect and check images in a store.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "image")]
pub struct ImageArgs {
    #[argh(subcommand)]
    pub command: ImageCommand,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum ImageCommand {
    Import(ImportArgs),
    List(ListArgs),
    Show(ShowArgs),
    Verify(VerifyArgs),
}

/// Build a signed image from partition contents into STORE/NAME/VERSION.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "import",
    example = "{command_name} --store /srv/drover/images --name debian --version 12.7 --key /etc/drover/drover.key \\
    --bios-boot-code /usr/lib/SYSLINUX/gptmbr.bin \\
    --partition label=ESP,type=esp,size=256M,fs=vfat,content=raw:/build/esp.img,attributes=legacy-bios-bootable \\
    --partition label=root,type=linux,size=rest,fs=ext4,content=dir:/build/rootfs",
    note = "Each --partition is one GPT partition, in disk order, as comma-separated KEY=VALUE pairs:
  size=SIZE          required: whole MiB as bytes or with a K/M/G/T suffix (powers of 1024),
                     e.g. 64M, 2G; or rest (the rest of the disk, last partition only)
  label=TEXT         the GPT name, at most 36 characters (default: none)
  type=TYPE          esp, bios-boot, linux, swap, root-x86-64, or a type GUID (default: linux)
  fs=FS              ext4, vfat, swap, none (default: none); the agent creates it for tar
                     and dir content, which need ext4 or vfat; with raw content it describes
                     the image (say fs=vfat for a FAT ESP image)
  content=SOURCE     what fills it (default: none, left as created):
                       raw:FILE  a raw partition or disk image, written from its first byte
                       tar:FILE  a tar archive, plain or gzip-compressed (detected by content)
                       dir:DIR   a root directory, stored as a tar stream: sorted, numeric
                                 owners, modes, mtimes, symlinks, hardlinks, device nodes,
                                 FIFOs, extended attributes (sockets are skipped)
  attributes=A[+A]   GPT attribute bits: required, no-block-io, legacy-bios-bootable
Write a comma inside a value as \\, (and a backslash before a comma as \\\\).
Boot style: an ESP (type=esp) with fs=vfat makes the image UEFI-bootable; --bios-boot-code
(at most 440 bytes, e.g. syslinux's gptmbr.bin) makes it BIOS-bootable.
The image is built under STORE/.staging, signed, verified like a node would, then renamed to
STORE/NAME/VERSION (manifest.json, manifest.sig, payload, payload.torrent). Existing versions are never replaced."
)]
pub struct ImportArgs {
    /// the image store directory (created if missing)
    #[argh(option)]
    pub store: PathBuf,
    /// image name: 1 to 128 of A-Z a-z 0-9 . _ -
    #[argh(option)]
    pub name: String,
    /// image version, same characters; must not exist yet
    #[argh(option)]
    pub version: String,
    /// the secret key file (drover.key from `key generate`)
    #[argh(option)]
    pub key: PathBuf,
    /// a partition, in disk order (repeat; syntax below)
    #[argh(option)]
    pub partition: Vec<String>,
    /// MBR boot code for BIOS boot, at most 440 bytes
    #[argh(option)]
    pub bios_boot_code: Option<PathBuf>,
    /// uncompressed bytes per chunk: a multiple of 4K up to 64M (default 4M)
    #[argh(option, from_str_fn(parse_chunk_size))]
    pub chunk_size: Option<u64>,
    /// deflate level 0-9 (default 6)
    #[argh(option, from_str_fn(parse_level))]
    pub level: Option<u32>,
    /// payload.torrent's piece length: a power of two from 16K to 16M
    /// (default: the smallest that keeps the payload within 2000 pieces)
    #[argh(option, from_str_fn(parse_piece_length))]
    pub piece_length: Option<u32>,
}

fn parse_piece_length(text: &str) -> Result<u32, String> {
    let size = parse_size(text).map_err(|why| format!("{why}; accepted: {SIZE_ACCEPTED}"))?;
    check_piece_length(size)
}

fn parse_chunk_size(text: &str) -> Result<u64, String> {
    let size = parse_size(text).map_err(|why| format!("{why}; accepted: {SIZE_ACCEPTED}"))?;
    if size == 0 || !size.is_multiple_of(CHUNK_ALIGN) || size > MAX_CHUNK_SIZE {
        return Err(format!(
            "{size} bytes; accepted: a multiple of 4K from 4K to 64M, e.g. 1M, 4M (the default)"
        ));
    }
    Ok(size)
}

fn parse_level(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(level) if level <= 9 => Ok(level),
        _ => Err("accepted: 0 (store) to 9 (smallest); 6 is the default".into()),
    }
}

/// List the images in a store: every version with its sizes, the newest marked.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "list")]
pub struct ListArgs {
    /// the image store directory
    #[argh(option)]
    pub store: PathBuf,
}

/// Summarise an image's manifest: layout, chunks, sizes, hashes.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "show",
    note = "Without @VERSION, the newest version: versions compare per dot-separated component, numerically where both are numbers (1.10 > 1.9)."
)]
pub struct ShowArgs {
    /// the image store directory
    #[argh(option)]
    pub store: PathBuf,
    /// NAME or NAME@VERSION
    #[argh(positional)]
    pub image: ImageRef,
}

/// Check an image like a node would: signature, manifest, every chunk, each partition's content and the payload hash.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "verify",
    note = "Exits non-zero naming the first problem found (e.g. the first bad chunk). Without @VERSION, the newest version."
)]
pub struct VerifyArgs {
    /// the image store directory
    #[argh(option)]
    pub store: PathBuf,
    /// the public key file to trust (drover.pub from `key generate`)
    #[argh(option)]
    pub key: PathBuf,
    /// NAME or NAME@VERSION
    #[argh(positional)]
    pub image: ImageRef,
}

/// Nodes in the fleet, through the running server.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "node")]
pub struct NodeArgs {
    #[argh(subcommand)]
    pub command: NodeCommand,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum NodeCommand {
    Add(NodeAddArgs),
    List(NodeListArgs),
    Show(NodeShowArgs),
    Remove(NodeRemoveArgs),
}

/// Register a machine by its MAC; it stays idle (booting from its disk) until a deploy.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "add",
    example = "{command_name} --config /etc/drover/server.toml 52:54:00:12:34:01 --name web1"
)]
pub struct NodeAddArgs {
    /// the server's TOML config file (public_url, state directory)
    #[argh(option)]
    pub config: PathBuf,
    /// the server's URL (default: the config's public_url)
    #[argh(option)]
    pub server: Option<String>,
    /// the admin token file (default: admin.token in the config's state directory)
    #[argh(option)]
    pub token_file: Option<PathBuf>,
    /// a unique name: 1 to 63 of A-Z a-z 0-9 . _ -, starting with a letter or digit
    #[argh(option)]
    pub name: Option<String>,
    /// the MAC address, aa:bb:cc:dd:ee:ff
    #[argh(positional)]
    pub mac: String,
}

/// List the nodes: MAC, name, state, image, phase, progress, rate.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "list")]
pub struct NodeListArgs {
    /// the server's TOML config file (public_url, state directory)
    #[argh(option)]
    pub config: PathBuf,
    /// the server's URL (default: the config's public_url)
    #[argh(option)]
    pub server: Option<String>,
    /// the admin token file (default: admin.token in the config's state directory)
    #[argh(option)]
    pub token_file: Option<PathBuf>,
    /// print the admin API's JSON
    #[argh(switch)]
    pub json: bool,
}

/// Show one node (by MAC or name): its deployment, what is on its disk, its last 100 events.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "show")]
pub struct NodeShowArgs {
    /// the server's TOML config file (public_url, state directory)
    #[argh(option)]
    pub config: PathBuf,
    /// the server's URL (default: the config's public_url)
    #[argh(option)]
    pub server: Option<String>,
    /// the admin token file (default: admin.token in the config's state directory)
    #[argh(option)]
    pub token_file: Option<PathBuf>,
    /// print the admin API's JSON
    #[argh(switch)]
    pub json: bool,
    /// the node: its MAC or its name
    #[argh(positional)]
    pub node: String,
}

/// Forget a node (by MAC or name) and its history; if it boots again it is unknown.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "remove")]
pub struct NodeRemoveArgs {
    /// the server's TOML config file (public_url, state directory)
    #[argh(option)]
    pub config: PathBuf,
    /// the server's URL (default: the config's public_url)
    #[argh(option)]
    pub server: Option<String>,
    /// the admin token file (default: admin.token in the config's state directory)
    #[argh(option)]
    pub token_file: Option<PathBuf>,
    /// the node: its MAC or its name
    #[argh(positional)]
    pub node: String,
}

/// Assign an image to nodes (MACs or names); each installs it at its next network boot.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "deploy",
    example = "{command_name} --config /etc/drover/server.toml --image debian web1 web2 52:54:00:12:34:03",
    note = "All or nothing: an unknown node or an image missing from the store assigns nothing.
A bare NAME is pinned to the store's newest version now. Each node gets a new report token,
so a deployment already running on it is superseded (its reports are refused)."
)]
pub struct DeployArgs {
    /// the server's TOML config file (public_url, state directory)
    #[argh(option)]
    pub config: PathBuf,
    /// the server's URL (default: the config's public_url)
    #[argh(option)]
    pub server: Option<String>,
    /// the admin token file (default: admin.token in the config's state directory)
    #[argh(option)]
    pub token_file: Option<PathBuf>,
    /// the image, NAME or NAME@VERSION
    #[argh(option)]
    pub image: String,
    /// allow overwriting disks that have a partition table (default: the config's [deploy] wipe)
    #[argh(switch)]
    pub wipe: bool,
    /// how the image travels: http, chain or torrent (default: the config's [deploy] mode)
    #[argh(option)]
    pub mode: Option<String>,
    /// the nodes: MACs or names
    #[argh(positional)]
    pub nodes: Vec<String>,
}

/// The fleet at a glance, once or until every deployment has ended.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "status",
    note = "Exit status: 0 when no deployment is in progress and no node failed, 1 when a node
failed, 2 when deployments are still in progress (none failed). With --watch, the table is
redrawn every interval until no deployment is in progress, then it exits 0 or 1.
On a terminal the PROGRESS column is a bar; otherwise it is plain (as node list) and, when
watching, printed again only when it changed."
)]
pub struct StatusArgs {
    /// the server's TOML config file (public_url, state directory)
    #[argh(option)]
    pub config: PathBuf,
    /// the server's URL (default: the config's public_url)
    #[argh(option)]
    pub server: Option<String>,
    /// the admin token file (default: admin.token in the config's state directory)
    #[argh(option)]
    pub token_file: Option<PathBuf>,
    /// refresh until no deployment is in progress
    #[argh(switch)]
    pub watch: bool,
    /// seconds between refreshes with --watch (default 2; fractions allowed)
    #[argh(
        option,
        from_str_fn(parse_interval),
        default = "Duration::from_secs(2)"
    )]
    pub interval: Duration,
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(secs) if (0.1..=3600.0).contains(&secs) => Ok(Duration::from_secs_f64(secs)),
        _ => Err("accepted: seconds from 0.1 to 3600, e.g. 2 or 0.5".into()),
    }
}

/// The admin client for a command's connection options.
fn admin(
    config: &Path,
    server: Option<&str>,
    token_file: Option<&Path>,
) -> anyhow::Result<AdminClient> {
    let config = Config::load(config)?;
    AdminClient::for_config(&config, server, token_file)
}

/// `aa:bb:cc:dd:ee:ff (name)` or the MAC alone.
fn label(n: &Node) -> String {
    match &n.name {
        Some(name) => format!("{} ({name})", n.mac),
        None => n.mac.clone(),
    }
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn run_node(command: NodeCommand) -> anyhow::Result<()> {
    match command {
        NodeCommand::Add(a) => {
            let client = admin(&a.config, a.server.as_deref(), a.token_file.as_deref())?;
            let node = client.add(&AddNode {
                mac: a.mac,
                name: a.name,
            })?;
            println!(
                "added {}: idle (boots from its disk); drover-server deploy --image NAME {} assigns it an image",
                label(&node),
                node.name.as_deref().unwrap_or(&node.mac)
            );
        }
        NodeCommand::List(a) => {
            let client = admin(&a.config, a.server.as_deref(), a.token_file.as_deref())?;
            let nodes = client.nodes()?;
            if a.json {
                print_json(&NodeList { nodes })?;
            } else {
                print!("{}", fleet_text::list_table(&nodes));
            }
        }
        NodeCommand::Show(a) => {
            let client = admin(&a.config, a.server.as_deref(), a.token_file.as_deref())?;
            let detail = client.show(&a.node)?;
            if a.json {
                print_json(&detail)?;
            } else {
                print!("{}", fleet_text::show_text(&detail));
            }
        }
        NodeCommand::Remove(a) => {
            let client = admin(&a.config, a.server.as_deref(), a.token_file.as_deref())?;
            let node = client.remove(&a.node)?;
            println!("removed {} (state {})", label(&node), node.state);
        }
    }
    Ok(())
}

fn run_deploy(a: DeployArgs) -> anyhow::Result<()> {
    if a.nodes.is_empty() {
        anyhow::bail!("no nodes given; accepted: one or more MACs or node names after the options");
    }
    let client = admin(&a.config, a.server.as_deref(), a.token_file.as_deref())?;
    let nodes = client.deploy(&DeployRequest {
        image: a.image,
        nodes: a.nodes,
        // Absent: the server's [deploy] wipe and mode.
        wipe: a.wipe.then_some(true),
        mode: a.mode,
    })?;
    for n in &nodes {
        let mode = n
            .mode
            .as_deref()
            .map_or(String::new(), |m| format!(", mode {m}"));
        println!(
            "deploy {} to {} (wipe {}{mode}): it installs at its next network boot",
            n.image.as_deref().unwrap_or("-"),
            label(n),
            kernel_cmdline::bool_str(n.wipe)
        );
    }
    Ok(())
}

fn run_status(a: StatusArgs) -> anyhow::Result<ExitCode> {
    let client = admin(&a.config, a.server.as_deref(), a.token_file.as_deref())?;
    let tty = std::io::stdout().is_terminal();
    let outcome = status::run(
        &client,
        a.watch,
        a.interval,
        tty,
        &mut std::io::stdout().lock(),
    )?;
    Ok(outcome.exit_code())
}

/// Run a parsed command line to completion; the exit status to end with.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Serve(serve) => {
            let config = Config::load(&serve.config)?;
            let state = crate::http::AppState::open(config)?;
            tokio::runtime::Runtime::new()
                .context("starting the async runtime")?
                .block_on(crate::http::serve(state))?;
        }
        Command::Node(NodeArgs { command }) => run_node(command)?,
        Command::Deploy(a) => run_deploy(a)?,
        Command::Status(a) => return run_status(a),
        Command::Chain(ChainArgs { command }) => {
            let (config, server, token_file, session, start) = match command {
                ChainCommand::Status(a) => (a.config, a.server, a.token_file, a.session, false),
                ChainCommand::Start(a) => (a.config, a.server, a.token_file, a.session, true),
            };
            let client = admin(&config, server.as_deref(), token_file.as_deref())?;
            let status = if start {
                client.chain_start(&session)?
            } else {
                client.chain_status(&session)?
            };
            print!("{}", crate::chain::session_text::render(&status));
        }
        Command::DnsmasqConfig(a) => {
            // Mode first: a usage mistake is reported before the config is read.
            let mode = DhcpMode::from_flags(a.dhcp_range, a.proxy).map_err(anyhow::Error::msg)?;
            let config = Config::load(&a.config)?;
            crate::dnsmasq::check_boot_url(&config.public_url).map_err(anyhow::Error::msg)?;
            print!(
                "{}",
                crate::dnsmasq::render(&DnsmasqSettings {
                    public_url: config.public_url,
                    mode,
                    interface: a.interface,
                    tftp_root: a
                        .tftp_root
                        .unwrap_or_else(|| crate::dnsmasq::DEFAULT_TFTP_ROOT.into()),
                })
            );
        }
        Command::Key(KeyArgs {
            command: KeyCommand::Generate(a),
        }) => {
            let g = crate::key_generate::generate(&a.out, a.force)?;
            println!("secret key: {} (keep it private)", g.secret.display());
            println!("public key: {}", g.public.display());
            println!("{}", g.key);
        }
        Command::Image(ImageArgs { command }) => match command {
            ImageCommand::Import(a) => run_import(a)?,
            ImageCommand::List(a) => print!("{}", list_report(&Store::new(a.store))?),
            ImageCommand::Show(a) => {
                let dir = Store::new(a.store).resolve(&a.image)?;
                print!("{}", show_report(&dir, &read_manifest(&dir)?));
            }
            ImageCommand::Verify(a) => {
                let key = sign::read_public_key(&a.key)?;
                let dir = Store::new(a.store).resolve(&a.image)?;
                let v = verify_dir(&dir, &key)?;
                let m = &v.manifest;
                println!(
                    "{}@{}: OK: signed by {key}; {} chunks, partitions with content: {}, payload {} sha256 {} ({:.2} s)",
                    m.name,
                    m.version,
                    m.chunks.len(),
                    m.sources().count(),
                    Human(m.payload.size),
                    m.payload.sha256,
                    v.elapsed.as_secs_f64()
                );
                match &v.torrent {
                    Some(t) => println!("{}: pieces match the payload", torrent_line(t)),
                    None => println!(
                        "torrent: none (imported before drover made payload.torrent, or an empty payload)"
                    ),
                }
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}

fn run_import(a: ImportArgs) -> anyhow::Result<()> {
    let layout = parse_layout(&a.partition)?;
    let defaults = BuildOptions::default();
    let build = BuildOptions {
        chunk_size: a.chunk_size.unwrap_or(DEFAULT_CHUNK_SIZE),
        level: a.level.unwrap_or(defaults.level),
        ..defaults
    };
    let req = ImportRequest {
        store: a.store,
        name: a.name,
        version: a.version,
        key: a.key,
        build,
        layout,
        bios_boot_code: a.bios_boot_code,
        piece_length: a.piece_length,
    };
    let imported = import(&req, &mut |line| eprintln!("{line}"))?;
    print!("{}", import_summary(&imported));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, String> {
        Args::from_args(&["drover-server"], args).map_err(|e| e.output)
    }

    #[test]
    fn dnsmasq_config_flags() {
        let args = parse(&[
            "dnsmasq-config",
            "--config",
            "s.toml",
            "--interface",
            "eth1",
            "--dhcp-range",
            "10.0.0.5,10.0.0.9,255.255.255.0",
            "--tftp-root",
            "/srv/tftp",
        ])
        .unwrap();
        let Command::DnsmasqConfig(a) = args.command else {
            panic!("not dnsmasq-config");
        };
        assert_eq!(a.config, PathBuf::from("s.toml"));
        assert_eq!(a.interface.as_deref(), Some("eth1"));
        assert_eq!(
            a.dhcp_range.map(|r| (
                r.start.to_string(),
                r.end.to_string(),
                r.mask.map(|m| m.to_string())
            )),
            Some((
                "10.0.0.5".into(),
                "10.0.0.9".into(),
                Some("255.255.255.0".into())
            ))
        );
        assert_eq!(a.proxy, None);
        assert_eq!(a.tftp_root, Some(PathBuf::from("/srv/tftp")));

        let args = parse(&[
            "dnsmasq-config",
            "--config",
            "s.toml",
            "--proxy",
            "10.0.0.0",
        ])
        .unwrap();
        let Command::DnsmasqConfig(a) = args.command else {
            panic!("not dnsmasq-config");
        };
        assert_eq!(a.proxy, Some(std::net::Ipv4Addr::new(10, 0, 0, 0)));
        assert_eq!((a.dhcp_range, a.interface, a.tftp_root), (None, None, None));

        let e = parse(&[
            "dnsmasq-config",
            "--config",
            "s",
            "--dhcp-range",
            "10.0.0.9,10.0.0.5",
        ])
        .unwrap_err();
        assert!(
            e.contains(
                "'--dhcp-range' with value '10.0.0.9,10.0.0.5': START 10.0.0.9 is after END"
            ),
            "{e}"
        );
        let e = parse(&["dnsmasq-config", "--config", "s", "--proxy", "10.0.0.0/8"]).unwrap_err();
        assert!(e.contains("accepted: the subnet's network address"), "{e}");
    }

    #[test]
    fn dnsmasq_config_needs_one_mode_before_reading_the_config() {
        let run_with = |extra: &[&str]| {
            let mut v = vec!["dnsmasq-config", "--config", "/nonexistent/server.toml"];
            v.extend(extra);
            run(parse(&v).unwrap()).unwrap_err().to_string()
        };
        let e = run_with(&[]);
        assert!(e.contains("one of --dhcp-range"), "{e}");
        let e = run_with(&["--proxy", "10.0.0.0", "--dhcp-range", "10.0.0.5,10.0.0.9"]);
        assert!(e.contains("exclude each other"), "{e}");
        let e = run_with(&["--proxy", "10.0.0.0"]);
        assert!(e.contains("/nonexistent/server.toml: cannot read"), "{e}");
    }

    #[test]
    fn import_flags() {
        let args = parse(&[
            "image",
            "import",
            "--store",
            "/s",
            "--name",
            "demo",
            "--version",
            "1",
            "--key",
            "k",
            "--chunk-size",
            "1M",
            "--level",
            "9",
            "--piece-length",
            "256K",
            "--bios-boot-code",
            "mbr.bin",
            "--partition",
            "size=1M",
            "--partition",
            "size=rest",
        ])
        .unwrap();
        let Command::Image(ImageArgs {
            command: ImageCommand::Import(a),
        }) = args.command
        else {
            panic!("not an import");
        };
        assert_eq!(a.partition, ["size=1M", "size=rest"]);
        assert_eq!((a.chunk_size, a.level), (Some(1 << 20), Some(9)));
        assert_eq!(a.piece_length, Some(256 << 10));
        assert_eq!(a.bios_boot_code, Some(PathBuf::from("mbr.bin")));
    }

    #[test]
    fn bad_flag_values_say_what_is_accepted() {
        let base = [
            "image",
            "import",
            "--store",
            "/s",
            "--name",
            "n",
            "--version",
            "1",
            "--key",
            "k",
        ];
        let with = |flag: &str, value: &str| {
            let mut v = base.to_vec();
            v.extend([flag, value]);
            parse(&v).unwrap_err()
        };
        let e = with("--chunk-size", "5000");
        assert!(e.contains("'--chunk-size' with value '5000': 5000 bytes; accepted: a multiple of 4K from 4K to 64M"), "{e}");
        assert!(with("--chunk-size", "128M").contains("accepted: a multiple of 4K"));
        assert!(with("--chunk-size", "4Q").contains("unknown suffix \"Q\"; accepted: a byte count"));
        let e = with("--piece-length", "48K");
        assert!(e.contains("'--piece-length' with value '48K': 49152 bytes; accepted: a power of two from 16384 (16 KiB) to 16777216 (16 MiB)"), "{e}");
        assert!(with("--piece-length", "32M").contains("accepted: a power of two"));
        let e = with("--level", "10");
        assert!(
            e.contains("'--level' with value '10': accepted: 0 (store) to 9"),
            "{e}"
        );
        let e = parse(&["image", "show", "--store", "/s", "a/b"]).unwrap_err();
        assert!(e.contains("a/b"), "{e}");
    }

    #[test]
    fn show_verify_key() {
        let args = parse(&["image", "verify", "--store", "/s", "--key", "p", "demo@1.2"]).unwrap();
        let Command::Image(ImageArgs {
            command: ImageCommand::Verify(a),
        }) = args.command
        else {
            panic!("not a verify");
        };
        assert_eq!(
            (a.image.name.as_str(), a.image.version.as_deref()),
            ("demo", Some("1.2"))
        );
        let args = parse(&["key", "generate", "--out", "/k", "--force"]).unwrap();
        let Command::Key(KeyArgs {
            command: KeyCommand::Generate(a),
        }) = args.command
        else {
            panic!("not a key generate");
        };
        assert!(a.force);
    }

    #[test]
    fn fleet_commands() {
        // The QEMU tests put --config last.
        let args = parse(&[
            "node",
            "add",
            "52:54:00:12:34:01",
            "--name",
            "web1",
            "--config",
            "s.toml",
        ])
        .unwrap();
        let Command::Node(NodeArgs {
            command: NodeCommand::Add(a),
        }) = args.command
        else {
            panic!("not node add");
        };
        assert_eq!(
            (a.mac.as_str(), a.name.as_deref()),
            ("52:54:00:12:34:01", Some("web1"))
        );
        assert_eq!((a.server, a.token_file), (None, None));

        let args = parse(&[
            "deploy",
            "--image",
            "demo@1.0",
            "--wipe",
            "web1",
            "web2",
            "--config",
            "s.toml",
            "--server",
            "http://10.0.0.1:8080",
            "--token-file",
            "t",
        ])
        .unwrap();
        let Command::Deploy(a) = args.command else {
            panic!("not deploy");
        };
        assert_eq!((a.image.as_str(), a.wipe), ("demo@1.0", true));
        assert_eq!(a.nodes, ["web1", "web2"]);
        assert_eq!(a.server.as_deref(), Some("http://10.0.0.1:8080"));
        assert_eq!(a.token_file, Some(PathBuf::from("t")));

        let args = parse(&["status", "--config", "s.toml"]).unwrap();
        let Command::Status(a) = args.command else {
            panic!("not status");
        };
        assert_eq!((a.watch, a.interval), (false, Duration::from_secs(2)));
        let args = parse(&["status", "--config", "s", "--watch", "--interval", "0.5"]).unwrap();
        let Command::Status(a) = args.command else {
            panic!("not status");
        };
        assert_eq!((a.watch, a.interval), (true, Duration::from_millis(500)));
        for bad in ["0", "-1", "x", "7200"] {
            let e = parse(&["status", "--config", "s", "--interval", bad]).unwrap_err();
            assert!(
                e.contains("accepted: seconds from 0.1 to 3600"),
                "{bad}: {e}"
            );
        }
        let args = parse(&["node", "show", "web1", "--json", "--config", "s"]).unwrap();
        assert!(matches!(
            args.command,
            Command::Node(NodeArgs {
                command: NodeCommand::Show(NodeShowArgs { json: true, .. })
            })
        ));
    }

    #[test]
    fn deploy_without_nodes_is_refused_before_connecting() {
        let args = parse(&[
            "deploy",
            "--image",
            "demo",
            "--config",
            "/nonexistent/s.toml",
        ])
        .unwrap();
        let e = run(args).unwrap_err().to_string();
        assert_eq!(
            e,
            "no nodes given; accepted: one or more MACs or node names after the options"
        );
    }
}
