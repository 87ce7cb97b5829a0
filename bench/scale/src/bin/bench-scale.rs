//! `bench-scale`: drover http, drover chain, udpcast and drover torrent
//! side by side for N = 1, 2, 4, …, 32 nodes in network namespaces (see
//! the `drover_bench` crate). Prints a table, writes `results.csv` and
//! `plot.png`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use argh::FromArgs;
use drover_bench::fleet::Bins;
use drover_bench::image::Image;
use drover_bench::lab::Rate;
use drover_bench::run::{self, Mode, Row, RunSpec};
use drover_bench::{auto_rate, cpu::CpuUse, missing_prerequisites, results};

/// drover's scale benchmark: N nodes as processes in network namespaces
/// with tc-shaped links, for drover http, drover chain, udpcast and drover
/// torrent.
#[derive(FromArgs)]
struct Args {
    /// node counts, comma-separated (default 1,2,4,8,16,32)
    #[argh(option, default = "String::from(\"1,2,4,8,16,32\")")]
    n: String,
    /// image size in MiB (default 256)
    #[argh(option, default = "256")]
    size_mib: u64,
    /// link rate in Mbit/s for every node and the server, or "auto"
    /// (default): per mode and N, see --budget-mbit
    #[argh(option, default = "String::from(\"auto\")")]
    rate_mbit: String,
    /// auto rate: the full-rate streams at once (N for chain, udpcast and
    /// torrent, 1 for http, whose nodes share the server's link) add up to at most
    /// this many Mbit/s, so the 2 shared cores stay below saturation
    /// (default 512)
    #[argh(option, default = "512.0")]
    budget_mbit: f64,
    /// auto rate: at most this many Mbit/s (default 100)
    #[argh(option, default = "100.0")]
    max_rate_mbit: f64,
    /// transports, comma-separated (default http,chain,udpcast,torrent)
    #[argh(option, default = "String::from(\"http,chain,udpcast,torrent\")")]
    modes: String,
    /// image chunk size in KiB (default 1024; the importer's own default
    /// is 4096): a chain node verifies a whole chunk before forwarding
    /// it, so the tail of an N-node chain starts N chunk times late
    #[argh(option, default = "1024")]
    chunk_kib: u64,
    /// output directory (default target/bench-scale)
    #[argh(option, default = "PathBuf::from(\"target/bench-scale\")")]
    out: PathBuf,
    /// keep the node disks of each run under OUT/runs/
    #[argh(switch)]
    keep_disks: bool,
}

fn main() -> Result<()> {
    let args: Args = argh::from_env();
    let ns: Vec<usize> = args
        .n
        .split(',')
        .map(|s| s.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--n {:?}: expected numbers like 1,2,4", args.n))?;
    let modes: Vec<Mode> = args
        .modes
        .split(',')
        .map(|s| s.trim().parse::<Mode>())
        .collect::<Result<_, _>>()
        .map_err(anyhow::Error::msg)?;
    let fixed_rate = match args.rate_mbit.as_str() {
        "auto" => None,
        r => Some(Rate(r.parse::<f64>().with_context(|| {
            format!("--rate-mbit {r:?}: expected a number or auto")
        })?)),
    };
    let missing = missing_prerequisites(modes.contains(&Mode::Udpcast));
    if !missing.is_empty() {
        bail!("cannot run:\n  - {}", missing.join("\n  - "));
    }
    let bins = Bins::locate()?;
    let out = std::path::absolute(&args.out)?;
    eprintln!(
        "bench-scale: image {} MiB, N = {:?}, modes {:?}, output {}",
        args.size_mib,
        ns,
        modes.iter().map(Mode::to_string).collect::<Vec<_>>(),
        out.display()
    );
    let image = Image::build(
        &out.join("image"),
        &bins.server,
        args.size_mib,
        Some(args.chunk_kib),
    )?;
    eprintln!(
        "image: raw {} bytes, payload {} bytes, chunks of {} KiB",
        image.raw_len, image.payload_len, args.chunk_kib
    );

    let mut rows: Vec<Row> = Vec::new();
    for &n in &ns {
        for &mode in &modes {
            let rate = fixed_rate
                .unwrap_or_else(|| auto_rate(mode, n, args.budget_mbit, args.max_rate_mbit));
            let ideal = rate.ideal_secs(image.payload_len);
            // http nodes share the server's link: N times the ideal.
            let expected = if mode == Mode::Http {
                ideal * n as f64
            } else {
                ideal
            };
            let spec = RunSpec {
                mode,
                nodes: n,
                rate,
                timeout: Duration::from_secs_f64(expected * 3.0 + 120.0),
            };
            eprintln!(
                "run: {mode} N={n} at {} Mbit/s (ideal {ideal:.1} s, expect ~{expected:.0} s)",
                rate.0
            );
            let row = match run::run(&out, "dbs", &bins, &image, &spec, args.keep_disks) {
                Ok(row) => row,
                Err(e) => {
                    eprintln!("run {mode} N={n} failed: {e:#}");
                    failed_row(&spec, image.payload_len, &e)
                }
            };
            eprint!("{}", results::table(std::slice::from_ref(&row)));
            for p in &row.problems {
                eprintln!("  problem: {p}");
            }
            rows.push(row);
            // Results so far survive an interrupted run.
            results::write(&out, &rows, &modes)?;
        }
    }
    println!();
    print!("{}", results::table(&rows));
    println!();
    print!("{}", results::summary(&rows));
    println!(
        "a node's time: from the launch of all nodes to its disk written, synced and verified \
         (drover) or its receiver's exit (udpcast); ideal = the image's bytes at the shaped \
         link rate; link = per-node throughput / link rate; cpu = share of all cores of the \
         machine, other jobs included (mean/busiest second); srv tx = bytes the server's \
         interface sent from the launch until every node left (all its traffic, headers \
         included) over the bytes one node needs"
    );
    for line in results::write(&out, &rows, &modes)? {
        println!("{line}");
    }
    let bad: usize = rows.iter().map(|r| r.nodes - r.ok).sum();
    if bad > 0 {
        bail!("{bad} node runs did not finish verified (see the problems above)");
    }
    Ok(())
}

fn failed_row(spec: &RunSpec, bytes: u64, e: &anyhow::Error) -> Row {
    Row {
        mode: spec.mode,
        nodes: spec.nodes,
        rate_mbit: spec.rate.0,
        bytes,
        ideal_secs: spec.rate.ideal_secs(bytes),
        last_secs: 0.0,
        first_secs: 0.0,
        node_mbit_mean: 0.0,
        node_mbit_min: 0.0,
        stream_mbit_mean: None,
        stream_mbit_min: None,
        cpu: CpuUse::default(),
        server_tx: None,
        linger_secs: None,
        reaped: 0,
        ok: 0,
        problems: vec![format!("run failed: {e:#}")],
    }
}
