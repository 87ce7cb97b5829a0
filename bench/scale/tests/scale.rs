//! The scale benchmark in a small form, for `make test`: 4 nodes, a 32 MiB
//! image, 100 Mbit/s links, one test per transport. Each asserts outcomes
//! only — every node's disk verified and its agent ended well (exit 0, or
//! stopped while still serving others after its disk was done) and, for
//! drover, `done` in the server's state; torrent nodes must leave the
//! swarm by themselves once all are done — and prints its figures (the
//! server's transmitted bytes as a multiple of the payload among them):
//! the machine is shared and noisy, so wall-clock limits are generous
//! sanity bounds.
//!
//! Needs root, iproute2 and udpcast; `DROVER_SKIP_SCALE_TESTS=1` skips.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Result};
use drover_bench::fleet::Bins;
use drover_bench::image::Image;
use drover_bench::lab::Rate;
use drover_bench::run::{self, Mode, RunSpec};
use drover_bench::{results, should_run};

const NODES: usize = 4;
const SIZE_MIB: u64 = 32;
const RATE: Rate = Rate(100.0);

fn out_dir(test: &str) -> PathBuf {
    drover_qemu_tests::artifacts::target_dir()
        .join("bench-scale-tests")
        .join(test)
}

fn small_run(test: &str, mode: Mode) -> Result<()> {
    if !should_run(test, mode == Mode::Udpcast)? {
        return Ok(());
    }
    let bins = Bins::locate()?;
    let out = out_dir(test);
    let image = Image::build(&out.join("image"), &bins.server, SIZE_MIB, Some(1024))?;
    let ideal = RATE.ideal_secs(image.payload_len);
    // http nodes share the server's link; the others each get a full one.
    let expected = if mode == Mode::Http {
        ideal * NODES as f64
    } else {
        ideal
    };
    let spec = RunSpec {
        mode,
        nodes: NODES,
        rate: RATE,
        timeout: Duration::from_secs_f64(expected * 10.0 + 120.0),
    };
    let row = run::run(&out, "dbt", &bins, &image, &spec, false)?;
    eprint!("{}", results::table(std::slice::from_ref(&row)));
    if let Some(linger) = row.linger_secs {
        eprintln!(
            "{test}: the last node left {linger:.1} s after the last disk was done ({} stopped \
             after {:?})",
            row.reaped,
            run::LINGER_GRACE
        );
    }
    ensure!(
        row.ok == NODES,
        "{test}: {} of {NODES} nodes finished verified; problems:\n{}\n(logs in {})",
        row.ok,
        row.problems.join("\n"),
        run::run_dir(&out, &spec).display()
    );
    // Torrent nodes seed until the tracker lists nobody downloading: with
    // every node done, they must leave by themselves.
    ensure!(
        mode != Mode::Torrent || row.reaped == 0,
        "{test}: {} nodes still seeding {:?} after the last disk was done (logs in {})",
        row.reaped,
        run::LINGER_GRACE,
        run::run_dir(&out, &spec).display()
    );
    // Remove the image too: only the logs stay.
    let _ = std::fs::remove_dir_all(out.join("image"));
    Ok(())
}

#[test]
fn http_4_nodes() -> Result<()> {
    small_run("http_4_nodes", Mode::Http)
}

#[test]
fn chain_4_nodes() -> Result<()> {
    small_run("chain_4_nodes", Mode::Chain)
}

#[test]
fn udpcast_4_nodes() -> Result<()> {
    small_run("udpcast_4_nodes", Mode::Udpcast)
}

#[test]
fn torrent_4_nodes() -> Result<()> {
    small_run("torrent_4_nodes", Mode::Torrent)
}
