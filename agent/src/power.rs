//! The end of PID 1: reboot, power off or halt — never `exit`, which would
//! panic the kernel ("Attempted to kill init").

use std::time::Duration;

use rustix::system::RebootCommand;

/// What PID 1 does when it is finished, successfully or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Reboot,
    Poweroff,
    Halt,
    /// Stay up with the console readable (`deploy.reboot=no`).
    Stay,
}

impl From<kernel_cmdline::OnError> for Action {
    fn from(v: kernel_cmdline::OnError) -> Self {
        match v {
            kernel_cmdline::OnError::Reboot => Action::Reboot,
            kernel_cmdline::OnError::Poweroff => Action::Poweroff,
            kernel_cmdline::OnError::Halt => Action::Halt,
        }
    }
}

impl From<kernel_cmdline::AfterSuccess> for Action {
    fn from(v: kernel_cmdline::AfterSuccess) -> Self {
        match v {
            kernel_cmdline::AfterSuccess::Reboot => Action::Reboot,
            kernel_cmdline::AfterSuccess::Poweroff => Action::Poweroff,
            kernel_cmdline::AfterSuccess::None => Action::Stay,
        }
    }
}

impl Action {
    /// The words printed on the console before acting.
    pub fn describe(self) -> &'static str {
        match self {
            Action::Reboot => "rebooting",
            Action::Poweroff => "powering off",
            Action::Halt => "halting (the error stays on this console)",
            Action::Stay => "staying up",
        }
    }
}

/// Flush filesystems and carry out `action`. Does not return: if the kernel
/// refuses (it should not for PID 1), sleep forever rather than exit.
pub fn finish(action: Action, delay: Duration) -> ! {
    rustix::fs::sync();
    if !delay.is_zero() {
        std::thread::sleep(delay);
    }
    let cmd = match action {
        Action::Reboot => Some(RebootCommand::Restart),
        Action::Poweroff => Some(RebootCommand::PowerOff),
        Action::Halt => Some(RebootCommand::Halt),
        Action::Stay => None,
    };
    if let Some(cmd) = cmd {
        quiesce_network();
        if let Err(e) = rustix::system::reboot(cmd) {
            log::error!("reboot({cmd:?}) failed: {e}; staying up");
        }
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Take every Ethernet interface down before the kernel shuts down, as an
/// init system's network teardown would: the reports are delivered by now,
/// and a NIC still polling while the machine powers off has been seen to
/// livelock a TCG guest (virtio-net TX completion spinning in ksoftirqd).
fn quiesce_network() {
    for iface in crate::net::iface::list(std::path::Path::new("/sys/class/net")) {
        if let Err(e) = crate::net::iface::set_down(&iface.name) {
            log::debug!("taking {} down: {e}", iface.name);
        }
    }
}
