//! PID 1: set up the initramfs, run the phases, and end by rebooting,
//! powering off or halting. Never returns, never exits.

use std::time::Duration;

use anyhow::{Context, Result};
use kernel_cmdline::OnError;

use crate::power::{self, Action};
use crate::report::{self, Reporter};
use crate::{console, deploy, early, kmod, net, run};

/// Give an operator a moment to read the error before the screen clears.
const REBOOT_DELAY_ON_ERROR: Duration = Duration::from_secs(5);

/// The body of `/init`.
pub fn main() -> ! {
    console::init();
    // Before anything can fail: without /dev there may be no console.
    let early = early::setup();
    log::info!("agent {} starting as pid 1", crate::VERSION);
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    // Known even when the options are bad, so a bad option still ends the
    // way the operator asked.
    let on_error = kernel_cmdline::on_error_hint(&cmdline);
    install_panic_hook(on_error);

    // Off until the options and the network are known; errors before that
    // can only be shown on the console.
    let mut reporter = Reporter::off();
    let result = early.and_then(|()| phases(&cmdline, &mut reporter));
    match result {
        Ok(after) => {
            log::info!("deploy finished: {}", after.describe());
            power::finish(after, Duration::ZERO)
        }
        Err(e) => fail(on_error, &e, &reporter),
    }
}

fn phases(cmdline: &str, reporter: &mut Reporter) -> Result<Action> {
    let opts = kernel_cmdline::parse(cmdline)?;
    console::set_level(opts.log);
    log::info!("options parsed: {}", opts.summary());

    let release = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    let report = kmod::Coldplug {
        root: "/".into(),
        release,
        loader: &mut kmod::load_module,
        settle: Duration::from_millis(100),
    }
    .run()
    .context("loading kernel modules")?;
    log::info!(
        "modules loaded: {} ({})",
        report.loaded.len(),
        report.loaded.join(", ")
    );
    if !report.failed.is_empty() {
        let names: Vec<&str> = report.failed.iter().map(|(m, _)| m.as_str()).collect();
        log::debug!(
            "modules that did not load (no matching hardware?): {}",
            names.join(", ")
        );
    }

    let net = net::configure(&opts)?;
    match &net {
        Some(n) => log::info!("{}", n.describe()),
        None => log::info!("network: ip=off, leaving interfaces alone"),
    }

    let mac = net.as_ref().map(|n| n.iface.mac).or(opts.bootif);
    *reporter = Reporter::new(&opts, mac, report::Settings::default());
    let env = deploy::Env {
        disk: None,
        root: "/".into(),
        key: run::baked_in_key(std::path::Path::new("/"))?,
        mac,
        patience: deploy::PATIENCE,
    };
    run::deploy(&opts, &env, reporter)?;
    Ok(opts.reboot.into())
}

/// Print the error chain once, report it (the console first: the operator
/// should not wait for a server to read it), then do what
/// `deploy.on-error` says.
fn fail(on_error: OnError, e: &anyhow::Error, reporter: &Reporter) -> ! {
    log::error!("{e:#}");
    reporter.failure(e);
    let action = Action::from(on_error);
    log::info!("on-error={}: {}", on_error, action.describe());
    let delay = if action == Action::Reboot {
        REBOOT_DELAY_ON_ERROR
    } else {
        Duration::ZERO
    };
    power::finish(action, delay)
}

/// A panic in PID 1 would abort and panic the kernel: report it like any
/// other error and follow `deploy.on-error` instead.
fn install_panic_hook(on_error: OnError) {
    std::panic::set_hook(Box::new(move |info| {
        // The reporter is out of reach here; the console shows the bug.
        fail(
            on_error,
            &anyhow::anyhow!("internal error (bug in the agent): {info}"),
            &Reporter::off(),
        );
    }));
}
