//! Results: the table printed at the end, `results.csv` (always) and
//! `plot.png` (time vs N, drawn by gnuplot when it is installed).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result};

use crate::run::{Mode, Row};

/// The CSV header; one line per [`Row`] follows.
pub const CSV_HEADER: &str = "mode,nodes,rate_mbit,bytes,ideal_s,last_s,first_s,time_over_ideal,\
node_mbit_mean,node_mbit_min,link_share,cpu_mean,cpu_peak,server_tx_bytes,server_tx_over_bytes,\
linger_s,reaped,ok,problems,stream_mbit_mean,stream_mbit_min,stream_share";

/// The rows as CSV (header included). Times in seconds, CPU as a share of
/// the whole machine; the server's transmitted bytes (all its traffic)
/// raw and as a multiple of `bytes` (empty when not measured); linger:
/// from the last disk done to the last node gone, `reaped` the nodes the
/// run stopped after its grace; stream: throughput from each node's disk
/// partitioned to its disk done (empty for udpcast).
pub fn csv(rows: &[Row]) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    for r in rows {
        let problems = r.problems.join("; ").replace('"', "'");
        let opt = |v: Option<String>| v.unwrap_or_default();
        let _ = writeln!(
            out,
            "{},{},{},{},{:.3},{:.3},{:.3},{:.4},{:.2},{:.2},{:.4},{:.3},{:.3},{},{},{},{},{},\"{}\",{},{},{}",
            r.mode,
            r.nodes,
            r.rate_mbit,
            r.bytes,
            r.ideal_secs,
            r.last_secs,
            r.first_secs,
            r.time_ratio(),
            r.node_mbit_mean,
            r.node_mbit_min,
            r.link_share(),
            r.cpu.mean,
            r.cpu.peak,
            opt(r.server_tx.map(|b| b.to_string())),
            opt(r.server_tx_ratio().map(|x| format!("{x:.4}"))),
            opt(r.linger_secs.map(|x| format!("{x:.2}"))),
            r.reaped,
            r.ok,
            problems,
            opt(r.stream_mbit_mean.map(|x| format!("{x:.2}"))),
            opt(r.stream_mbit_min.map(|x| format!("{x:.2}"))),
            opt(r.stream_share().map(|x| format!("{x:.4}"))),
        );
    }
    out
}

/// A fixed-width table for the terminal.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<8} {:>3} {:>7} {:>8} {:>8} {:>7} {:>17} {:>6} {:>6} {:>11} {:>7} {:>6}",
        "mode",
        "N",
        "Mbit/s",
        "ideal s",
        "last s",
        "T/ideal",
        "node Mbit/s mean",
        "link",
        "stream",
        "cpu mean/pk",
        "srv tx",
        "ok"
    );
    for r in rows {
        let tx = r
            .server_tx_ratio()
            .map_or_else(|| "-".to_owned(), |x| format!("{x:.2}x"));
        let stream = r
            .stream_share()
            .map_or_else(|| "-".to_owned(), |x| format!("{:.0}%", x * 100.0));
        let _ = writeln!(
            out,
            "{:<8} {:>3} {:>7.1} {:>8.2} {:>8.2} {:>7.2} {:>9.1} (min {:>4.1}) {:>5.0}% {:>6} {:>4.0}%/{:>4.0}% {:>7} {:>3}/{:<3}",
            r.mode.to_string(),
            r.nodes,
            r.rate_mbit,
            r.ideal_secs,
            r.last_secs,
            r.time_ratio(),
            r.node_mbit_mean,
            r.node_mbit_min,
            r.link_share() * 100.0,
            stream,
            r.cpu.mean * 100.0,
            r.cpu.peak * 100.0,
            tx,
            r.ok,
            r.nodes
        );
    }
    out
}

/// The headline figures: chain's T(Nmax)/T(1) (as multiples of the ideal
/// time, since the link rate may differ between the two rows, and raw)
/// against the goal ≤ 1.15, and chain's per-node throughput as a share of
/// the link against the goal ≥ 0.9; torrent's T(Nmax)/T(1) against ≤ 1.3
/// and the server's transmitted bytes for the whole swarm against
/// ≤ 1.2 × the payload.
pub fn summary(rows: &[Row]) -> String {
    let mut out = String::new();
    chain_summary(rows, &mut out);
    torrent_summary(rows, &mut out);
    out
}

/// T(Nmax)/T(1) of `mode` in multiples of the ideal time (and raw), with
/// `goal`; `None` without two node counts.
fn scaling(rows: &[&Row], mode: Mode, goal: f64) -> Option<String> {
    let first = rows.iter().min_by_key(|r| r.nodes)?;
    let last = rows.iter().max_by_key(|r| r.nodes)?;
    if last.nodes <= first.nodes {
        return None;
    }
    let norm = last.time_ratio() / first.time_ratio();
    Some(format!(
        "{mode} T({})/T({}) = {:.3} in multiples of the ideal time (goal <= {goal}: {}); raw seconds {:.2}/{:.2} = {:.3}{}",
        last.nodes,
        first.nodes,
        norm,
        if norm <= goal { "met" } else { "NOT met" },
        last.last_secs,
        first.last_secs,
        last.last_secs / first.last_secs,
        if last.rate_mbit != first.rate_mbit {
            format!(" (links {} vs {} Mbit/s)", last.rate_mbit, first.rate_mbit)
        } else {
            String::new()
        }
    ))
}

fn chain_summary(rows: &[Row], out: &mut String) {
    let chain: Vec<&Row> = rows.iter().filter(|r| r.mode == Mode::Chain).collect();
    if chain.is_empty() {
        out.push_str("chain: no rows\n");
        return;
    }
    if let Some(line) = scaling(&chain, Mode::Chain, 1.15) {
        let _ = writeln!(out, "{line}");
    }
    let shares = |f: &dyn Fn(&Row) -> Option<f64>| {
        let v: Vec<(usize, f64)> = chain
            .iter()
            .filter_map(|r| f(r).map(|x| (r.nodes, x)))
            .collect();
        let worst = v.iter().map(|&(_, x)| x).fold(f64::INFINITY, f64::min);
        let list = v
            .iter()
            .map(|(n, x)| format!("N={n} {x:.2}"))
            .collect::<Vec<_>>()
            .join(", ");
        (list, worst)
    };
    // The goal is judged on the streaming share: the launch share also
    // counts each process's start, its manifest and its partitioning,
    // the same for one node as for 32.
    let (launch, _) = shares(&|r| Some(r.link_share()));
    let (stream, worst) = shares(&|r| r.stream_share());
    let _ = writeln!(
        out,
        "chain per-node throughput while streaming (disk partitioned to disk done): {stream} of the link \
         (worst row {worst:.2}; goal >= 0.9: {}); from the launch: {launch}",
        if worst >= 0.9 { "met" } else { "NOT met" }
    );
}

fn torrent_summary(rows: &[Row], out: &mut String) {
    let torrent: Vec<&Row> = rows.iter().filter(|r| r.mode == Mode::Torrent).collect();
    if torrent.is_empty() {
        return;
    }
    if let Some(line) = scaling(&torrent, Mode::Torrent, 1.3) {
        let _ = writeln!(out, "{line}");
    }
    let ratios: Vec<(usize, f64)> = torrent
        .iter()
        .filter_map(|r| r.server_tx_ratio().map(|x| (r.nodes, x)))
        .collect();
    if let Some(worst) = ratios.iter().map(|&(_, x)| x).reduce(f64::max) {
        let _ = writeln!(
            out,
            "torrent server upload (its interface's tx bytes, all traffic) over the payload: {} \
             (worst {worst:.2}; goal <= 1.2 for the whole swarm: {})",
            ratios
                .iter()
                .map(|(n, x)| format!("N={n} {x:.2}x"))
                .collect::<Vec<_>>()
                .join(", "),
            if worst <= 1.2 { "met" } else { "NOT met" }
        );
    }
}

/// The gnuplot script drawing `csv` (T/ideal and seconds vs N, one line
/// per mode) into `png`.
pub fn gnuplot_script(csv: &Path, png: &Path, modes: &[Mode]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "set terminal pngcairo size 1200,500 font ',10'");
    let _ = writeln!(s, "set output '{}'", png.display());
    let _ = writeln!(s, "set datafile separator ','");
    let _ = writeln!(s, "set key top left");
    let _ = writeln!(s, "set logscale x 2");
    let _ = writeln!(s, "set xlabel 'nodes (N)'");
    let _ = writeln!(s, "set grid");
    let _ = writeln!(s, "set multiplot layout 1,2 title 'drover scale benchmark'");
    let plot = |s: &mut String, col: u32, guides: &str| {
        let mut lines: Vec<String> = modes
            .iter()
            .map(|m| {
                // Each mode's rows alone, so its points are joined by lines.
                format!(
                    "\"< grep '^{m},' '{}'\" using 2:{col} with linespoints title '{m}'",
                    csv.display()
                )
            })
            .collect();
        if !guides.is_empty() {
            lines.push(guides.to_owned());
        }
        let _ = writeln!(s, "plot {}", lines.join(", \\\n     "));
    };
    let _ = writeln!(s, "set ylabel 'time to last node / ideal shaped-link time'");
    let _ = writeln!(s, "set logscale y 2");
    let _ = writeln!(s, "set yrange [0.5:*]");
    plot(
        &mut s,
        8,
        "1 with lines dt 2 lc 'black' title 'ideal', x with lines dt 3 lc 'gray' title 'N x ideal'",
    );
    let _ = writeln!(s, "set ylabel 'time to last node (s)'");
    let _ = writeln!(s, "set yrange [*:*]");
    plot(&mut s, 6, "");
    let _ = writeln!(s, "unset multiplot");
    s
}

/// Write `results.csv` (and `plot.gp` + `plot.png` when gnuplot is
/// installed) into `dir`. Returns what was written, one line each.
pub fn write(dir: &Path, rows: &[Row], modes: &[Mode]) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let csv_path = dir.join("results.csv");
    std::fs::write(&csv_path, csv(rows))
        .with_context(|| format!("writing {}", csv_path.display()))?;
    let mut wrote = vec![format!("wrote {}", csv_path.display())];
    let png = dir.join("plot.png");
    let gp = dir.join("plot.gp");
    std::fs::write(&gp, gnuplot_script(&csv_path, &png, modes))?;
    match Command::new("gnuplot").arg(&gp).output() {
        Ok(out) if out.status.success() => wrote.push(format!("wrote {}", png.display())),
        Ok(out) => wrote.push(format!(
            "plot not drawn: gnuplot failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => wrote.push(format!(
            "plot not drawn: gnuplot: {e} (apt-get install gnuplot-nox); script {}",
            gp.display()
        )),
    }
    Ok(wrote)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::CpuUse;

    fn row(mode: Mode, nodes: usize, rate: f64, last: f64) -> Row {
        Row {
            mode,
            nodes,
            rate_mbit: rate,
            bytes: 12_500_000,
            ideal_secs: 100.0 / rate,
            last_secs: last,
            first_secs: last / 2.0,
            node_mbit_mean: rate * 0.95,
            node_mbit_min: rate * 0.9,
            stream_mbit_mean: Some(rate * 0.97),
            stream_mbit_min: Some(rate * 0.96),
            cpu: CpuUse {
                mean: 0.4,
                peak: 0.6,
            },
            server_tx: None,
            linger_secs: None,
            reaped: 0,
            ok: nodes,
            problems: vec![],
        }
    }

    #[test]
    fn csv_has_a_line_per_row() {
        let mut r = row(Mode::Http, 4, 100.0, 4.2);
        r.problems = vec!["node1: \"bad\"".into()];
        let mut t = row(Mode::Torrent, 4, 100.0, 1.1);
        t.server_tx = Some(13_750_000);
        t.linger_secs = Some(4.25);
        t.reaped = 1;
        let text = csv(&[r, row(Mode::Chain, 4, 100.0, 1.1), t]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], CSV_HEADER);
        assert_eq!(lines.len(), 4);
        assert!(
            lines[3].contains(",0.400,0.600,13750000,1.1000,4.25,1,4,\"\",97.00,96.00,0.9700"),
            "{}",
            lines[3]
        );
        assert!(
            lines[1].starts_with("http,4,100,12500000,1.000,4.200,2.100,4.2000,95.00,90.00,0.9500,0.400,0.600,,,,0,4,\"node1: 'bad'\""),
            "{}",
            lines[1]
        );
        let cols = CSV_HEADER.split(',').count();
        assert_eq!(lines[2].split(',').count(), cols);
    }

    #[test]
    fn summary_normalises_by_the_ideal_time() {
        let rows = [
            row(Mode::Chain, 1, 100.0, 1.05),
            row(Mode::Chain, 32, 20.0, 5.5),
            row(Mode::Http, 32, 100.0, 33.0),
        ];
        let s = summary(&rows);
        // 5.5/5 ÷ 1.05/1 = 1.0476
        assert!(s.contains("chain T(32)/T(1) = 1.048"), "{s}");
        assert!(s.contains("goal <= 1.15: met"), "{s}");
        assert!(s.contains("links 20 vs 100 Mbit/s"), "{s}");
        assert!(
            s.contains("worst row 0.97; goal >= 0.9: met); from the launch: N=1 0.95"),
            "{s}"
        );
        assert_eq!(summary(&rows[2..]), "chain: no rows\n");
        assert!(!s.contains("torrent"), "{s}");
    }

    #[test]
    fn torrent_summary_has_scaling_and_server_upload() {
        let mut a = row(Mode::Torrent, 1, 100.0, 1.1);
        a.server_tx = Some(13_000_000);
        let mut b = row(Mode::Torrent, 32, 16.0, 9.0);
        b.server_tx = Some(16_250_000);
        let s = summary(&[a, b]);
        // 9/6.25 ÷ 1.1/1 = 1.309
        assert!(s.contains("torrent T(32)/T(1) = 1.309"), "{s}");
        assert!(s.contains("goal <= 1.3: NOT met"), "{s}");
        assert!(
            s.contains(
                "N=1 1.04x, N=32 1.30x (worst 1.30; goal <= 1.2 for the whole swarm: NOT met)"
            ),
            "{s}"
        );
    }

    #[test]
    fn table_and_plot_script() {
        let mut r = row(Mode::Udpcast, 8, 64.0, 2.0);
        r.server_tx = Some(13_125_000);
        let t = table(&[r]);
        assert_eq!(t.lines().count(), 2);
        assert!(t.contains("  1.05x   8/8"), "{t}");
        assert!(
            t.lines()
                .nth(1)
                .unwrap()
                .starts_with("udpcast    8    64.0"),
            "{t}"
        );
        let gp = gnuplot_script(
            Path::new("/o/results.csv"),
            Path::new("/o/plot.png"),
            &[Mode::Http, Mode::Chain],
        );
        assert!(gp.contains("set output '/o/plot.png'"), "{gp}");
        assert!(
            gp.contains("\"< grep '^chain,' '/o/results.csv'\" using 2:8"),
            "{gp}"
        );
        assert!(
            gp.contains("\"< grep '^http,' '/o/results.csv'\" using 2:6"),
            "{gp}"
        );
    }
}
