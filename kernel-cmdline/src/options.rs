//! From words to [`Options`] and back.

use std::fmt::Write as _;
use std::str::FromStr;

use crate::error::{Error, InvalidValue};
use crate::ident::{is_valid_token, TOKEN_ACCEPTED};
use crate::keyword::{bool_str, parse_bool};
use crate::tokenize::split;
use crate::{
    AfterSuccess, DiskSelector, ImageRef, IpConfig, LogLevel, MacAddr, Mode, OnError, Options,
    PublicKey, ServerUrl,
};

/// Every valid `deploy.*` key, in the order [`render`] writes them.
pub const KEYS: &[&str] = &[
    "deploy.server",
    "deploy.image",
    "deploy.mode",
    "deploy.disk",
    "deploy.wipe",
    "deploy.reboot",
    "deploy.on-error",
    "deploy.token",
    "deploy.key",
    "deploy.insecure",
    "deploy.log",
];

/// The options [`parse`] looks at; the discriminant indexes [`Slots`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opt {
    Server,
    Image,
    Mode,
    Disk,
    Wipe,
    Reboot,
    OnError,
    Token,
    PubKey,
    Insecure,
    Log,
    Bootif,
    Ip,
}

/// In the order of [`KEYS`].
const DEPLOY_KEYS: [Opt; 11] = [
    Opt::Server,
    Opt::Image,
    Opt::Mode,
    Opt::Disk,
    Opt::Wipe,
    Opt::Reboot,
    Opt::OnError,
    Opt::Token,
    Opt::PubKey,
    Opt::Insecure,
    Opt::Log,
];

/// What a word's key is to us.
#[derive(Debug, PartialEq, Eq)]
enum Class {
    Ours(Opt),
    /// In `deploy.*` but not a key we know: an error, likely a typo.
    Unknown,
    /// The kernel's or another program's: ignored.
    Foreign,
}

fn classify(key: &str) -> Class {
    match key {
        "BOOTIF" => return Class::Ours(Opt::Bootif),
        "ip" => return Class::Ours(Opt::Ip),
        _ => {}
    }
    if !key.starts_with("deploy.") {
        return Class::Foreign;
    }
    // The kernel treats `-` and `_` in parameter names alike (parameq), so
    // operators used to that may write deploy.on_error.
    let canonical = key.replace('_', "-");
    KEYS.iter()
        .zip(DEPLOY_KEYS)
        .find(|(k, _)| **k == canonical)
        .map_or(Class::Unknown, |(_, key)| Class::Ours(key))
}

/// One word: the key as written (for messages) and its value.
type Word = (String, Option<String>);

/// The last word of each key (last occurrence wins, as in the kernel).
type Slots = [Option<Word>; 13];

/// Parse the `deploy.*` options, `BOOTIF` and `ip` out of a kernel command
/// line (the text of `/proc/cmdline`), applying defaults.
///
/// Errors, in this order: the first unknown `deploy.*` key; the first invalid
/// value (keys in [`KEYS`] order, then `BOOTIF`, `ip`); a missing
/// `deploy.server` or `deploy.image`. Only the last occurrence of a key is
/// looked at, so an earlier bad value that is overridden is not an error.
///
/// ```
/// let o = kernel_cmdline::parse(
///     "vmlinuz quiet deploy.server=http://10.0.0.1:8080 deploy.image=debian@12 deploy.wipe",
/// )?;
/// assert_eq!(o.image.to_string(), "debian@12");
/// assert!(o.wipe);
/// # Ok::<(), kernel_cmdline::Error>(())
/// ```
pub fn parse(cmdline: &str) -> Result<Options, Error> {
    let mut slots: Slots = Default::default();
    for (key, value) in split(cmdline) {
        match classify(&key) {
            Class::Ours(k) => slots[k as usize] = Some((key, value)),
            Class::Unknown => return Err(Error::UnknownKey { key, value }),
            Class::Foreign => {}
        }
    }
    let slot = |k: Opt| slots[k as usize].as_ref();

    // A missing required key is reported last, after every present value was
    // checked, so one boot shows the error in what the operator did write.
    let servers = value(
        slot(Opt::Server),
        ServerUrl::LIST_ACCEPTED,
        ServerUrl::parse_list,
    )?;
    let image = value(slot(Opt::Image), ImageRef::ACCEPTED, str::parse)?;
    let mode = value(slot(Opt::Mode), Mode::ACCEPTED, str::parse)?;
    let disk = value(slot(Opt::Disk), DiskSelector::ACCEPTED, str::parse)?;
    let wipe = flag(slot(Opt::Wipe))?;
    let reboot = value(slot(Opt::Reboot), AfterSuccess::ACCEPTED, str::parse)?;
    let on_error = value(slot(Opt::OnError), OnError::ACCEPTED, str::parse)?;
    let token = value(slot(Opt::Token), TOKEN_ACCEPTED, |s| {
        if is_valid_token(s) {
            Ok(s.to_owned())
        } else {
            Err(InvalidValue::new(TOKEN_ACCEPTED))
        }
    })?;
    let key = value(slot(Opt::PubKey), PublicKey::ACCEPTED, str::parse)?;
    let insecure = flag(slot(Opt::Insecure))?;
    let log = value(slot(Opt::Log), LogLevel::ACCEPTED, str::parse)?;
    let bootif = value(
        slot(Opt::Bootif),
        MacAddr::BOOTIF_ACCEPTED,
        MacAddr::from_bootif,
    )?;
    let ip = value(slot(Opt::Ip), IpConfig::ACCEPTED, str::parse)?;

    Ok(Options {
        servers: servers.ok_or(Error::Missing {
            key: KEYS[0],
            accepted: ServerUrl::LIST_ACCEPTED,
        })?,
        image: image.ok_or(Error::Missing {
            key: KEYS[1],
            accepted: ImageRef::ACCEPTED,
        })?,
        mode: mode.unwrap_or_default(),
        disk: disk.unwrap_or_default(),
        wipe,
        reboot: reboot.unwrap_or_default(),
        on_error: on_error.unwrap_or_default(),
        token,
        key,
        insecure,
        log: log.unwrap_or_default(),
        bootif,
        ip: ip.unwrap_or_default(),
    })
}

/// The parsed value of an optional key, `None` if absent; a bare key is an
/// error ("missing value") since only booleans may be bare.
fn value<T>(
    word: Option<&Word>,
    accepted: &'static str,
    parse: impl FnOnce(&str) -> Result<T, InvalidValue>,
) -> Result<Option<T>, Error> {
    match word {
        None => Ok(None),
        Some((key, None)) => Err(InvalidValue::new(accepted).at(key, None)),
        Some((key, Some(v))) => parse(v).map(Some).map_err(|e| e.at(key, Some(v))),
    }
}

/// A boolean: absent is false, bare is true.
fn flag(word: Option<&Word>) -> Result<bool, Error> {
    match word {
        None => Ok(false),
        Some((_, None)) => Ok(true),
        Some((key, Some(v))) => parse_bool(v).map_err(|e| e.at(key, Some(v))),
    }
}

/// Best effort: what `deploy.on-error` asks for, even when [`parse`] fails
/// for another reason, so the agent can power off or reboot as told after
/// reporting a bad option. The last valid value, else the default (halt).
pub fn on_error_hint(cmdline: &str) -> OnError {
    split(cmdline)
        .into_iter()
        .rev()
        .filter(|(k, _)| classify(k) == Class::Ours(Opt::OnError))
        .find_map(|(_, v)| v?.parse().ok())
        .unwrap_or_default()
}

/// Append ` key=value` to `out`, quoting the value if it has whitespace.
///
/// Quoting as `key="v"` is exactly what the kernel's tokenizer undoes; a
/// value with `"` cannot be quoted, but no valid value contains one.
fn push(out: &mut String, key: &str, value: &str) {
    if !out.is_empty() {
        out.push(' ');
    }
    let quote = value
        .bytes()
        .any(|b| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'));
    // Writing to a String cannot fail.
    let _ = if quote {
        write!(out, "{key}=\"{value}\"")
    } else {
        write!(out, "{key}={value}")
    };
}

fn join_servers(servers: &[ServerUrl]) -> String {
    servers
        .iter()
        .map(ServerUrl::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// A command-line fragment that [`parse`]s back to `opts`: the required
/// options always, the others only when not default, canonical spellings,
/// in [`KEYS`] order, then `BOOTIF` and `ip`.
///
/// The round trip holds for options whose parts are valid, i.e. could have
/// come from `parse` or the types' `FromStr` (at least one server, at most
/// two DNS servers, …); otherwise `parse` of the result is an error.
///
/// ```
/// let o = kernel_cmdline::parse("deploy.image=x deploy.server=http://boot/ deploy.disk=\"serial:A B\"")?;
/// assert_eq!(kernel_cmdline::render(&o), r#"deploy.server=http://boot deploy.image=x deploy.disk="serial:A B""#);
/// assert_eq!(kernel_cmdline::parse(&kernel_cmdline::render(&o))?, o);
/// # Ok::<(), kernel_cmdline::Error>(())
/// ```
pub fn render(opts: &Options) -> String {
    let mut out = String::new();
    push(&mut out, KEYS[0], &join_servers(&opts.servers));
    push(&mut out, KEYS[1], &opts.image.to_string());
    if opts.mode != Mode::default() {
        push(&mut out, KEYS[2], opts.mode.as_str());
    }
    if opts.disk != DiskSelector::default() {
        push(&mut out, KEYS[3], &opts.disk.to_string());
    }
    if opts.wipe {
        push(&mut out, KEYS[4], bool_str(true));
    }
    if opts.reboot != AfterSuccess::default() {
        push(&mut out, KEYS[5], opts.reboot.as_str());
    }
    if opts.on_error != OnError::default() {
        push(&mut out, KEYS[6], opts.on_error.as_str());
    }
    if let Some(token) = &opts.token {
        push(&mut out, KEYS[7], token);
    }
    if let Some(key) = &opts.key {
        push(&mut out, KEYS[8], &key.to_string());
    }
    if opts.insecure {
        push(&mut out, KEYS[9], bool_str(true));
    }
    if opts.log != LogLevel::default() {
        push(&mut out, KEYS[10], opts.log.as_str());
    }
    if let Some(mac) = &opts.bootif {
        push(&mut out, "BOOTIF", &mac.to_bootif());
    }
    if opts.ip != IpConfig::default() {
        push(&mut out, "ip", &opts.ip.to_string());
    }
    out
}

impl Options {
    /// One line for the console and logs, e.g.
    /// `image=debian@12 mode=http servers=http://10.0.0.1 disk=auto wipe=no reboot=yes on-error=halt ip=dhcp`,
    /// followed by whichever of `log=debug`, `insecure=yes`, `key=…`
    /// (first 8 hex digits), `token=set` (never the token itself) and
    /// `bootif=MAC` apply.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        push(&mut out, "image", &self.image.to_string());
        push(&mut out, "mode", self.mode.as_str());
        push(&mut out, "servers", &join_servers(&self.servers));
        push(&mut out, "disk", &self.disk.to_string());
        push(&mut out, "wipe", bool_str(self.wipe));
        push(&mut out, "reboot", self.reboot.as_str());
        push(&mut out, "on-error", self.on_error.as_str());
        push(&mut out, "ip", &self.ip.to_string());
        if self.log != LogLevel::default() {
            push(&mut out, "log", self.log.as_str());
        }
        if self.insecure {
            push(&mut out, "insecure", bool_str(true));
        }
        if let Some(key) = &self.key {
            let hex = key.to_string();
            push(
                &mut out,
                "key",
                &format!("{}…", hex.get(..8).unwrap_or_default()),
            );
        }
        if self.token.is_some() {
            push(&mut out, "token", "set");
        }
        if let Some(mac) = &self.bootif {
            push(&mut out, "bootif", &mac.to_string());
        }
        out
    }
}

impl FromStr for Options {
    type Err = Error;
    /// Same as [`parse`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}
