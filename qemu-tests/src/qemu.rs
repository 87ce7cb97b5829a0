//! QEMU virtual machines: a builder for the command line and a handle that
//! reads the serial console.
//!
//! Always `-accel tcg`: `/dev/kvm` exists on the build machines but KVM does
//! not work there (QEMU aborts or hangs, see shared/ENVIRONMENT.md).
//!
//! The serial console (`-serial stdio`) is read by a thread, line by line
//! with `\r` stripped, appended to `<log dir>/<vm>.console.log` and kept in
//! memory for [`Vm::wait_for_line`]. QEMU's own stderr goes to
//! `<log dir>/<vm>.log`.

use std::fs::File;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, ExitStatus};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use regex::Regex;

use crate::netns::Netns;
use crate::procs::{Proc, Procs};

/// Lines of console shown in errors.
pub const TAIL_LINES: usize = 40;

/// Firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Firmware {
    /// SeaBIOS, QEMU's default.
    #[default]
    Bios,
    /// OVMF (EDK II) from the `ovmf` package, as pflash with a per-VM copy
    /// of the variable store.
    Uefi,
}

/// NIC model. QEMU loads the matching iPXE option ROM (package ipxe-qemu)
/// for network boot, `pxe-*.rom` under BIOS and `efi-*.rom` under UEFI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Nic {
    #[default]
    VirtioNet,
    E1000,
}

impl Nic {
    /// The `-device` model name.
    pub fn model(self) -> &'static str {
        match self {
            Nic::VirtioNet => "virtio-net-pci",
            Nic::E1000 => "e1000",
        }
    }
}

/// The disk controller the VM's disks hang off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiskBus {
    #[default]
    VirtioBlk,
    Nvme,
}

/// How the NIC is connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// No NIC at all.
    None,
    /// QEMU user-mode networking (slirp): guest 10.0.2.15, gateway and DHCP
    /// server 10.0.2.2, DNS 10.0.2.3. Needs no privileges; reaches nothing
    /// we do not forward.
    User,
    /// A tap device inside a network namespace; QEMU runs in that namespace.
    Tap { netns: String, ifname: String },
}

/// `-kernel`/`-initrd`/`-append`: boot a kernel without firmware boot
/// devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectBoot {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub append: String,
}

/// What a console line must contain: a substring or a regex.
#[derive(Debug, Clone)]
pub enum Pattern {
    Substring(String),
    Regex(Regex),
}

impl Pattern {
    pub fn is_match(&self, line: &str) -> bool {
        match self {
            Pattern::Substring(s) => line.contains(s.as_str()),
            Pattern::Regex(r) => r.is_match(line),
        }
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pattern::Substring(s) => write!(f, "{s:?}"),
            Pattern::Regex(r) => write!(f, "/{}/", r.as_str()),
        }
    }
}

impl From<&str> for Pattern {
    fn from(s: &str) -> Pattern {
        Pattern::Substring(s.to_owned())
    }
}

impl From<String> for Pattern {
    fn from(s: String) -> Pattern {
        Pattern::Substring(s)
    }
}

impl From<Regex> for Pattern {
    fn from(r: Regex) -> Pattern {
        Pattern::Regex(r)
    }
}

impl From<&Regex> for Pattern {
    fn from(r: &Regex) -> Pattern {
        Pattern::Regex(r.clone())
    }
}

/// A VM to be started. Defaults: SeaBIOS, virtio-net with MAC
/// 52:54:00:12:34:56 and no network, 512 MiB, 1 vCPU, `-no-reboot`.
#[derive(Debug, Clone)]
pub struct VmBuilder {
    name: String,
    firmware: Firmware,
    nic: Nic,
    mac: String,
    network: Network,
    direct: Option<DirectBoot>,
    netboot: bool,
    memory_mib: u32,
    smp: u32,
    allow_reboot: bool,
    disks: Vec<PathBuf>,
    disk_bus: DiskBus,
    extra: Vec<String>,
}

impl VmBuilder {
    /// `name` names the log files; unique within a test.
    pub fn new(name: &str) -> VmBuilder {
        VmBuilder {
            name: name.to_owned(),
            firmware: Firmware::default(),
            nic: Nic::default(),
            mac: "52:54:00:12:34:56".to_owned(),
            network: Network::None,
            direct: None,
            netboot: false,
            memory_mib: 512,
            smp: 1,
            allow_reboot: false,
            disks: Vec::new(),
            disk_bus: DiskBus::VirtioBlk,
            extra: Vec::new(),
        }
    }

    pub fn firmware(mut self, firmware: Firmware) -> Self {
        self.firmware = firmware;
        self
    }

    pub fn nic(mut self, nic: Nic) -> Self {
        self.nic = nic;
        self
    }

    pub fn mac(mut self, mac: &str) -> Self {
        self.mac = mac.to_owned();
        self
    }

    /// User-mode networking.
    pub fn user_net(mut self) -> Self {
        self.network = Network::User;
        self
    }

    /// Connect to tap `ifname` of `netns` (see [`Netns::add_tap`]).
    pub fn tap(mut self, netns: &Netns, ifname: &str) -> Self {
        self.network = Network::Tap {
            netns: netns.name().to_owned(),
            ifname: ifname.to_owned(),
        };
        self
    }

    /// Boot `kernel` + `initrd` with command line `append` directly.
    pub fn direct_boot(mut self, kernel: &Path, initrd: &Path, append: &str) -> Self {
        self.direct = Some(DirectBoot {
            kernel: kernel.to_owned(),
            initrd: initrd.to_owned(),
            append: append.to_owned(),
        });
        self
    }

    /// Boot from the network first, then from the disks: the NIC gets
    /// `bootindex=1`, the disks 2, 3, … — the order a deployed machine has,
    /// so that when the server answers a node's PXE request with iPXE
    /// `exit` (localboot) the firmware boots the deployed disk. Both SeaBIOS
    /// and OVMF honour `bootindex`; `-boot n` would leave the disks out
    /// under OVMF.
    pub fn netboot(mut self) -> Self {
        self.netboot = true;
        self
    }

    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    pub fn smp(mut self, cpus: u32) -> Self {
        self.smp = cpus;
        self
    }

    /// Let a guest reboot go through. By default (`-no-reboot`) a reboot ends
    /// QEMU, so "the agent rebooted" shows as an exit.
    pub fn allow_reboot(mut self, allow: bool) -> Self {
        self.allow_reboot = allow;
        self
    }

    /// Attach a virtio-blk disk (format from the extension: `.qcow2`, else raw).
    pub fn disk(mut self, path: &Path) -> Self {
        self.disks.push(path.to_owned());
        self
    }

    /// Attach the disks as virtio-blk (default) or NVMe.
    pub fn disk_bus(mut self, bus: DiskBus) -> Self {
        self.disk_bus = bus;
        self
    }

    /// Extra QEMU arguments, appended last.
    pub fn arg(mut self, arg: &str) -> Self {
        self.extra.push(arg.to_owned());
        self
    }

    /// The QEMU arguments. Files the VM needs (OVMF variables, the SeaBIOS
    /// serial-console setting) are created in `dir`.
    pub fn args(&self, dir: &Path) -> Result<Vec<String>> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| (*s).to_owned()));
        push(&["-name", &self.name, "-accel", "tcg"]);
        push(&[
            "-m",
            &self.memory_mib.to_string(),
            "-smp",
            &self.smp.to_string(),
        ]);
        push(&["-display", "none", "-serial", "stdio", "-monitor", "none"]);
        if !self.allow_reboot {
            push(&["-no-reboot"]);
        }
        match self.firmware {
            Firmware::Bios => {
                // SeaBIOS's "sercon": mirror the text screen on COM1, so the
                // iPXE ROM's messages (DHCP, TFTP, HTTP fetches, our script's
                // `echo`) land in the console log too. SeaBIOS reads the port
                // as a little-endian integer, hence the 2-byte file.
                let sercon = dir.join(format!("{}.sercon-port", self.name));
                std::fs::write(&sercon, 0x3f8u16.to_le_bytes())?;
                push(&[
                    "-fw_cfg",
                    &format!("name=etc/sercon-port,file={}", sercon.display()),
                ]);
            }
            Firmware::Uefi => {
                let (code, vars) = find_ovmf()?;
                // OVMF writes its variable store: each VM gets its own copy.
                let my_vars = dir.join(format!("{}.OVMF_VARS.fd", self.name));
                std::fs::copy(&vars, &my_vars)
                    .with_context(|| format!("copying {}", vars.display()))?;
                push(&[
                    "-drive",
                    &format!(
                        "if=pflash,format=raw,unit=0,readonly=on,file={}",
                        code.display()
                    ),
                    "-drive",
                    &format!("if=pflash,format=raw,unit=1,file={}", my_vars.display()),
                ]);
                // QEMU's iPXE ROM is the network boot. Without these, after
                // iPXE's `exit` (the server's localboot) OVMF tries its own
                // network boot options before the disk: PXEv4 (which fetches
                // and runs iPXE once more), PXEv6, HTTPv4 and HTTPv6, each
                // waiting out its DHCP timeout — about 4 to 7 minutes under
                // TCG. With OVMF's IPv4 and IPv6 stacks off (OVMF 2022.11
                // honours both; see edk2's OvmfPkg/RUNTIME_CONFIG.md) the
                // disk boots about a second after iPXE exits.
                push(&[
                    "-fw_cfg",
                    "name=opt/org.tianocore/IPv4Support,string=no",
                    "-fw_cfg",
                    "name=opt/org.tianocore/IPv6Support,string=no",
                ]);
            }
        }
        let mut nic = format!("{},netdev=n0,mac={}", self.nic.model(), self.mac);
        if self.netboot {
            nic.push_str(",bootindex=1");
        }
        match &self.network {
            // Explicitly none: otherwise QEMU adds a default user-mode NIC.
            Network::None => push(&["-nic", "none"]),
            Network::User => push(&["-netdev", "user,id=n0", "-device", &nic]),
            Network::Tap { ifname, .. } => push(&[
                "-netdev",
                &format!("tap,id=n0,ifname={ifname},script=no,downscript=no"),
                "-device",
                &nic,
            ]),
        }
        if let Some(d) = &self.direct {
            push(&[
                "-kernel",
                &d.kernel.display().to_string(),
                "-initrd",
                &d.initrd.display().to_string(),
                "-append",
                &d.append,
            ]);
        }
        for (i, disk) in self.disks.iter().enumerate() {
            let boot = if self.netboot {
                format!(",bootindex={}", i + 2)
            } else {
                String::new()
            };
            let format = match disk.extension().and_then(|e| e.to_str()) {
                Some("qcow2") => "qcow2",
                _ => "raw",
            };
            push(&[
                "-drive",
                &format!("file={},if=none,id=disk{i},format={format}", disk.display()),
                "-device",
                &match self.disk_bus {
                    DiskBus::VirtioBlk => format!("virtio-blk-pci,drive=disk{i}{boot}"),
                    // NVMe needs a serial; it also names the disk for deploy.disk=serial:….
                    DiskBus::Nvme => format!("nvme,drive=disk{i},serial=drover{i}{boot}"),
                },
            ]);
        }
        a.extend(self.extra.iter().cloned());
        Ok(a)
    }

    /// Start the VM (inside the namespace for a tap network).
    pub fn spawn(self, procs: &Procs) -> Result<Vm> {
        let dir = procs.log_dir().to_owned();
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(self.args(&dir)?);
        let cmd = match &self.network {
            Network::Tap { netns, .. } => crate::netns::exec_in(netns, &cmd),
            _ => cmd,
        };
        Vm::start(procs, &self.name, cmd)
    }
}

/// OVMF code and variable-store template, Debian's paths (package `ovmf`).
pub fn find_ovmf() -> Result<(PathBuf, PathBuf)> {
    const CANDIDATES: &[(&str, &str)] = &[
        (
            "/usr/share/OVMF/OVMF_CODE_4M.fd",
            "/usr/share/OVMF/OVMF_VARS_4M.fd",
        ),
        (
            "/usr/share/OVMF/OVMF_CODE.fd",
            "/usr/share/OVMF/OVMF_VARS.fd",
        ),
    ];
    CANDIDATES
        .iter()
        .map(|(c, v)| (PathBuf::from(c), PathBuf::from(v)))
        .find(|(c, v)| c.is_file() && v.is_file())
        .context("no OVMF firmware (/usr/share/OVMF/OVMF_CODE*.fd + OVMF_VARS*.fd): apt-get install ovmf")
}

/// The console lines read so far, and whether the VM closed it (exited).
#[derive(Default)]
struct Console {
    state: Mutex<ConsoleState>,
    changed: Condvar,
}

#[derive(Default)]
struct ConsoleState {
    lines: Vec<String>,
    /// Where the next [`Vm::wait_for_line`] starts looking.
    cursor: usize,
    closed: bool,
}

impl Console {
    fn lock(&self) -> MutexGuard<'_, ConsoleState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The reader thread: until QEMU closes stdout.
    fn read_from(&self, stdout: ChildStdout, mut log: File) {
        let mut reader = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            // Firmware and kernels end lines with "\r\n"; iPXE redraws
            // progress with bare "\r". Neither helps a reader or a match.
            buf.retain(|&b| b != b'\r');
            if buf.last() == Some(&b'\n') {
                buf.pop();
            }
            let line = String::from_utf8_lossy(&buf).into_owned();
            let _ = writeln!(log, "{line}");
            self.lock().lines.push(line);
            self.changed.notify_all();
        }
        self.lock().closed = true;
        self.changed.notify_all();
    }
}

/// A running VM; killed on drop (via its [`Proc`]).
pub struct Vm {
    name: String,
    /// `test/vm`, for messages.
    label: String,
    proc: Proc,
    console: Arc<Console>,
    console_log: PathBuf,
    started: Instant,
}

impl Vm {
    /// Run `cmd` (QEMU, or a stand-in in unit tests) with its stdout as the
    /// console.
    fn start(procs: &Procs, name: &str, cmd: Command) -> Result<Vm> {
        let (proc, stdout) = procs.spawn_piped(name, cmd)?;
        let console_log = procs.log_dir().join(format!("{}.console.log", proc.name()));
        let console = Arc::new(Console::default());
        let file = File::create(&console_log)
            .with_context(|| format!("creating {}", console_log.display()))?;
        let reader = Arc::clone(&console);
        std::thread::Builder::new()
            .name(format!("{name}-console"))
            .spawn(move || reader.read_from(stdout, file))?;
        // Messages say `[test/vm]`: tests run in parallel and their output
        // interleaves.
        let test = procs
            .log_dir()
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        let label = format!("{test}/{}", proc.name());
        eprintln!("[{label}] started: console {}", console_log.display());
        Ok(Vm {
            name: name.to_owned(),
            label,
            proc,
            console,
            console_log,
            started: Instant::now(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The QEMU process guard.
    pub fn proc(&self) -> &Proc {
        &self.proc
    }

    /// Time since the VM was started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn console_log_path(&self) -> &Path {
        &self.console_log
    }

    /// All console lines so far.
    pub fn console(&self) -> Vec<String> {
        self.console.lock().lines.clone()
    }

    /// The first console line matching `pattern` after the previous match,
    /// waiting up to `timeout` for it. Matches are consumed in order, so a
    /// sequence of calls asserts the lines' order too.
    ///
    /// Fails early if the VM exits first; the error shows the last
    /// [`TAIL_LINES`] lines of console and QEMU's stderr.
    pub fn wait_for_line(&self, pattern: impl Into<Pattern>, timeout: Duration) -> Result<String> {
        let pattern = pattern.into();
        let deadline = Instant::now() + timeout;
        let mut state = self.console.lock();
        loop {
            if let Some(i) = state.lines[state.cursor..]
                .iter()
                .position(|l| pattern.is_match(l))
            {
                let i = state.cursor + i;
                state.cursor = i + 1;
                let line = state.lines[i].clone();
                eprintln!(
                    "[{}] +{:.1}s {line}",
                    self.label,
                    self.elapsed().as_secs_f64()
                );
                return Ok(line);
            }
            let now = Instant::now();
            if state.closed || now >= deadline {
                let why = if state.closed {
                    "the VM exited".to_owned()
                } else {
                    format!("timed out after {timeout:?}")
                };
                drop(state);
                bail!(
                    "[{}] {why} without a console line matching {pattern}\n{}",
                    self.label,
                    self.diagnostics()
                );
            }
            state = self
                .console
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Wait up to `timeout` for QEMU to exit by itself (poweroff, or reboot
    /// under `-no-reboot`).
    pub fn wait_exit(&self, timeout: Duration) -> Result<ExitStatus> {
        match self.proc.wait_timeout(timeout) {
            Ok(status) => {
                eprintln!(
                    "[{}] +{:.1}s QEMU exited: {status}",
                    self.label,
                    self.elapsed().as_secs_f64()
                );
                Ok(status)
            }
            Err(e) => bail!("[{}] {e:#}\n{}", self.label, self.diagnostics()),
        }
    }

    /// The last [`TAIL_LINES`] of console and of QEMU's stderr, with the
    /// log paths, for error messages.
    pub fn diagnostics(&self) -> String {
        let lines = self.console();
        let tail = &lines[lines.len().saturating_sub(TAIL_LINES)..];
        let mut out = format!(
            "--- last {} console lines ({}):\n{}\n",
            tail.len(),
            self.console_log.display(),
            tail.join("\n")
        );
        let stderr = self.proc.log();
        if !stderr.trim().is_empty() {
            out.push_str(&format!(
                "--- QEMU stderr ({}):\n{}\n",
                self.proc.log_path().display(),
                stderr.trim_end()
            ));
        }
        out
    }

    /// Stop the VM now.
    pub fn kill(&self) -> Option<ExitStatus> {
        self.proc.stop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(b: &VmBuilder) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let a = b.args(dir.path()).unwrap().join(" ");
        (dir, a)
    }

    #[test]
    fn direct_boot_user_net() {
        let b = VmBuilder::new("vm").user_net().direct_boot(
            Path::new("/k"),
            Path::new("/i"),
            "console=ttyS0",
        );
        let (_d, a) = args(&b);
        assert!(a.starts_with("-name vm -accel tcg -m 512 -smp 1 -display none -serial stdio -monitor none -no-reboot"), "{a}");
        assert!(
            a.contains("-netdev user,id=n0 -device virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56"),
            "{a}"
        );
        assert!(
            a.ends_with("-kernel /k -initrd /i -append console=ttyS0"),
            "{a}"
        );
        assert!(!a.contains("-boot"), "{a}");
    }

    #[test]
    fn tap_netboot_e1000_reboot_allowed() {
        let b = VmBuilder::new("vm")
            .nic(Nic::E1000)
            .mac("52:54:00:00:00:01")
            .allow_reboot(true)
            .disk(Path::new("/d.qcow2"))
            .netboot();
        let b = VmBuilder {
            network: Network::Tap {
                netns: "ns".into(),
                ifname: "tap3".into(),
            },
            ..b
        };
        let (_d, a) = args(&b);
        assert!(!a.contains("-no-reboot"), "{a}");
        assert!(a.contains("-netdev tap,id=n0,ifname=tap3,script=no,downscript=no -device e1000,netdev=n0,mac=52:54:00:00:00:01,bootindex=1"), "{a}");
        assert!(!a.contains("-boot"), "{a}");
        assert!(
            a.contains("-device virtio-blk-pci,drive=disk0,bootindex=2"),
            "{a}"
        );
    }

    #[test]
    fn bios_gets_sercon_file() {
        let (d, a) = args(&VmBuilder::new("vm"));
        let f = d.path().join("vm.sercon-port");
        assert!(
            a.contains(&format!(
                "-fw_cfg name=etc/sercon-port,file={}",
                f.display()
            )),
            "{a}"
        );
        assert_eq!(std::fs::read(f).unwrap(), [0xf8, 0x03]);
        assert!(a.contains("-nic none"), "{a}");
    }

    #[test]
    fn uefi_gets_its_own_vars() {
        if find_ovmf().is_err() {
            eprintln!("skipped: no OVMF installed");
            return;
        }
        let (d, a) = args(&VmBuilder::new("u").firmware(Firmware::Uefi));
        assert!(
            a.contains("if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE"),
            "{a}"
        );
        let vars = d.path().join("u.OVMF_VARS.fd");
        assert!(vars.is_file());
        assert!(
            a.contains(&format!("unit=1,file={}", vars.display())),
            "{a}"
        );
        assert!(!a.contains("sercon"), "{a}");
        // Only iPXE netboots: OVMF's own PXE/HTTP boot would delay localboot.
        assert!(
            a.contains("-fw_cfg name=opt/org.tianocore/IPv4Support,string=no -fw_cfg name=opt/org.tianocore/IPv6Support,string=no"),
            "{a}"
        );
    }

    #[test]
    fn disks() {
        let b = VmBuilder::new("vm")
            .disk(Path::new("/d/a.qcow2"))
            .disk(Path::new("/d/b.img"));
        let (_d, a) = args(&b);
        assert!(a.contains("-drive file=/d/a.qcow2,if=none,id=disk0,format=qcow2 -device virtio-blk-pci,drive=disk0"), "{a}");
        assert!(a.contains("-drive file=/d/b.img,if=none,id=disk1,format=raw -device virtio-blk-pci,drive=disk1"), "{a}");
    }

    fn fake_vm(script: &str) -> (tempfile::TempDir, Procs, Vm) {
        let dir = tempfile::tempdir().unwrap();
        let procs = Procs::new(dir.path()).unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        let vm = Vm::start(&procs, "fake", cmd).unwrap();
        (dir, procs, vm)
    }

    #[test]
    fn lines_are_matched_in_order_and_logged() {
        let (_d, _p, vm) =
            fake_vm(r"printf 'boot\r\nb: 1\na: 2\nb: 3\r\n'; printf 'tail'; sleep 600");
        let t = Duration::from_secs(10);
        assert_eq!(vm.wait_for_line("a:", t).unwrap(), "a: 2");
        // After "a: 2": "b: 1" is behind the cursor.
        assert_eq!(vm.wait_for_line("b:", t).unwrap(), "b: 3");
        let e = vm
            .wait_for_line("a:", Duration::from_millis(200))
            .unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("timed out after 200ms without a console line matching \"a:\""),
            "{e}"
        );
        assert!(e.contains("boot\nb: 1\na: 2\nb: 3"), "{e}");
        assert!(std::fs::read_to_string(vm.console_log_path())
            .unwrap()
            .starts_with("boot\nb: 1\n"));
        assert!(vm.wait_exit(Duration::from_millis(100)).is_err());
    }

    #[test]
    fn exit_ends_the_wait_early_and_keeps_the_last_partial_line() {
        let (_d, procs, vm) = fake_vm("echo one; printf two; exit 3");
        let start = Instant::now();
        let e = vm
            .wait_for_line("never", Duration::from_secs(60))
            .unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(10));
        assert!(format!("{e:#}").contains("the VM exited without"), "{e:#}");
        assert_eq!(vm.console(), ["one", "two"]);
        assert_eq!(
            vm.wait_exit(Duration::from_secs(10)).unwrap().code(),
            Some(3)
        );
        drop(vm);
        procs.assert_none_running().unwrap();
    }

    #[test]
    fn tail_is_limited() {
        let (_d, _p, vm) = fake_vm("for i in $(seq 1 100); do echo line$i; done");
        vm.wait_exit(Duration::from_secs(10)).unwrap();
        assert!(vm.wait_for_line("line100", Duration::from_secs(10)).is_ok());
        let diag = vm.diagnostics();
        assert!(diag.contains("--- last 40 console lines"), "{diag}");
        assert!(
            diag.contains("\nline61\n") && !diag.contains("line60\n"),
            "{diag}"
        );
    }

    #[test]
    fn patterns() {
        let p: Pattern = "lease:".into();
        assert!(p.is_match("drover: lease: address=1"));
        let p: Pattern = Regex::new(r"address=10\.0\.2\.\d+").unwrap().into();
        assert!(p.is_match("drover: lease: address=10.0.2.15/24"));
        assert!(!p.is_match("drover: lease: address=10.0.3.15/24"));
        assert_eq!(p.to_string(), r"/address=10\.0\.2\.\d+/");
    }
}
