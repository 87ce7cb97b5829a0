//! Console output: one `drover: …` line per event, greppable by operators
//! and by the QEMU harness.
//!
//! The agent has a single logging stack, the `log` facade, and this is its
//! only sink. Lines go to stderr, which for PID 1 is `/dev/console` (see
//! `early::reopen_console`). Each record is written with one `write` so lines
//! from different threads never interleave.

use std::io::Write;

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Console;

static CONSOLE: Console = Console;

impl Log for Console {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format_line(record.level(), &record.args().to_string());
        // Nothing useful can be done if the console itself fails.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// The console form of one record: a stable prefix, the level where it is
/// not plain progress, and exactly one trailing newline.
fn format_line(level: Level, msg: &str) -> String {
    let tag = match level {
        Level::Error => "error: ",
        Level::Warn => "warning: ",
        Level::Info => "",
        Level::Debug | Level::Trace => "debug: ",
    };
    format!("drover: {tag}{}\n", msg.trim_end())
}

/// Install the console logger (idempotent) at `info`.
pub fn init() {
    // A second call only fails because a logger is already set: fine.
    let _ = log::set_logger(&CONSOLE);
    log::set_max_level(LevelFilter::Info);
}

/// Follow `deploy.log=` once the options are known.
pub fn set_level(level: kernel_cmdline::LogLevel) {
    log::set_max_level(match level {
        kernel_cmdline::LogLevel::Info => LevelFilter::Info,
        kernel_cmdline::LogLevel::Debug => LevelFilter::Debug,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_have_prefix_level_and_one_newline() {
        assert_eq!(
            format_line(Level::Info, "link up: eth0"),
            "drover: link up: eth0\n"
        );
        assert_eq!(
            format_line(Level::Error, "no disk\n"),
            "drover: error: no disk\n"
        );
        assert_eq!(format_line(Level::Warn, "slow"), "drover: warning: slow\n");
        assert_eq!(format_line(Level::Debug, "x"), "drover: debug: x\n");
    }
}
