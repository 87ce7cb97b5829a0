//! What `image list`, `image show` and `image import` print. The text is
//! built from manifests here (testable); the CLI only prints it.
//!
//! `list` and `show` read manifests without checking their signature: they
//! describe what is in the store; `image verify` says whether to trust it.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context as _, Result};
use drover_agent::image::{ContentKind, Manifest, PartSize, MANIFEST_FILE, SIGNATURE_FILE};

use crate::import::Imported;
use crate::partition_spec::{attribute_name, fs_name, type_name};
use crate::size::{exact, Human};
use crate::store::{ImageDir, Store};
use crate::version_order::newest;

/// Read and parse `manifest.json` (signature not checked).
pub fn read_manifest(dir: &ImageDir) -> Result<Manifest> {
    let path = dir.file(MANIFEST_FILE);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    Manifest::parse(&bytes).with_context(|| format!("parsing {}", path.display()))
}

/// Uncompressed bytes of all sources.
fn content_bytes(m: &Manifest) -> u64 {
    m.sources().map(|(_, _, c)| c.size).sum()
}

/// `2.50` (uncompressed / compressed).
fn ratio(content: u64, payload: u64) -> String {
    if payload == 0 {
        "-".into()
    } else {
        format!("{:.2}", content as f64 / payload as f64)
    }
}

/// `image list`: one row per version, oldest first, newest marked.
pub fn list_report(store: &Store) -> Result<String> {
    let mut rows = vec![vec![
        "NAME".into(),
        "VERSION".into(),
        "PAYLOAD".into(),
        "CONTENT".into(),
        "RATIO".into(),
        "CHUNKS".into(),
        "PARTITIONS".into(),
        String::new(),
    ]];
    let names = store.names()?;
    for name in &names {
        let versions = store.versions(name)?;
        let latest = newest(versions.iter().map(String::as_str));
        for version in &versions {
            let dir = ImageDir {
                name: name.clone(),
                version: version.clone(),
                path: store.version_path(name, version),
            };
            let mark = if Some(version.as_str()) == latest {
                "latest".to_owned()
            } else {
                String::new()
            };
            let row = match read_manifest(&dir) {
                Ok(m) => vec![
                    name.clone(),
                    version.clone(),
                    Human(m.payload.size).to_string(),
                    Human(content_bytes(&m)).to_string(),
                    ratio(content_bytes(&m), m.payload.size),
                    m.chunks.len().to_string(),
                    m.disk.partitions.len().to_string(),
                    mark,
                ],
                Err(e) => vec![name.clone(), version.clone(), format!("unreadable: {e:#}")],
            };
            rows.push(row);
        }
    }
    if rows.len() == 1 {
        return Ok(format!("no images in {}\n", store.root().display()));
    }
    Ok(table(&rows))
}

/// `image show`: the manifest summarised.
pub fn show_report(dir: &ImageDir, m: &Manifest) -> String {
    let mut out = String::new();
    let content = content_bytes(m);
    let _ = writeln!(
        out,
        "image {}@{} in {}",
        m.name,
        m.version,
        dir.path.display()
    );
    let _ = writeln!(
        out,
        "payload: {} ({} bytes) in {} chunks of {}, sha256 {}",
        Human(m.payload.size),
        m.payload.size,
        m.chunks.len(),
        Human(m.chunk_size),
        m.payload.sha256
    );
    let _ = writeln!(
        out,
        "content: {} uncompressed, compression ratio {}",
        Human(content),
        ratio(content, m.payload.size)
    );
    let mut boot = Vec::new();
    if m.boot.uefi {
        boot.push("uefi".to_owned());
    }
    if m.boot.bios {
        let n = m.disk.bios_boot_code.as_ref().map_or(0, |c| c.0.len());
        boot.push(format!("bios ({n} bytes of MBR boot code)"));
    }
    if boot.is_empty() {
        boot.push("not marked bootable".into());
    }
    let _ = writeln!(
        out,
        "disk: GPT, {} partitions, at least {}; boot: {}",
        m.disk.partitions.len(),
        Human(m.disk.min_size),
        boot.join(", ")
    );
    let sig = dir.file(SIGNATURE_FILE);
    let _ = match std::fs::metadata(&sig) {
        Ok(meta) => writeln!(
            out,
            "signature: {SIGNATURE_FILE} ({} bytes), not checked here (image verify checks it)",
            meta.len()
        ),
        Err(e) => writeln!(out, "signature: MISSING ({}: {e})", sig.display()),
    };
    for line in partition_lines(m) {
        let _ = writeln!(out, "{line}");
    }
    out
}

/// Two lines per partition: the layout, then the content.
fn partition_lines(m: &Manifest) -> Vec<String> {
    let mut lines = Vec::new();
    for (i, p) in m.disk.partitions.iter().enumerate() {
        let kind = type_name(&p.type_guid)
            .map(str::to_owned)
            .unwrap_or_else(|| p.type_guid.to_string());
        let size = match p.size {
            PartSize::Bytes(n) => exact(n),
            PartSize::Rest => "rest".into(),
        };
        let mut line = format!(
            "{}: type {kind}, size {size}, fs {}",
            m.partition_name(i),
            fs_name(p.filesystem)
        );
        if !p.attributes.is_empty() {
            let names: Vec<&str> = p.attributes.iter().map(|a| attribute_name(*a)).collect();
            let _ = write!(line, ", attributes {}", names.join("+"));
        }
        lines.push(line);
        let Some(c) = &p.content else {
            lines.push("    content: none".into());
            continue;
        };
        let range = c.chunk_range();
        let compressed: u64 = m
            .chunks
            .get(range.clone())
            .map_or(0, |chunks| chunks.iter().map(|e| e.length).sum());
        let kind = match c.kind {
            ContentKind::Raw => "raw",
            ContentKind::Tar => "tar",
        };
        let mut line = format!(
            "    content: {kind} {} → {} in chunks {}-{} ({})",
            Human(c.size),
            Human(compressed),
            range.start,
            range.end.saturating_sub(1),
            c.chunks
        );
        if let (Some(entries), Some(files)) = (c.entries, c.file_bytes) {
            let _ = write!(line, ", {entries} entries, {} of files", Human(files));
        }
        let _ = write!(line, ", sha256 {}", c.sha256);
        lines.push(line);
    }
    lines
}

/// What `image import` prints when done.
pub fn import_summary(imported: &Imported) -> String {
    let m = &imported.manifest;
    let content = content_bytes(m);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "imported {}@{} into {}",
        m.name,
        m.version,
        imported.dir.path.display()
    );
    for line in partition_lines(m) {
        let _ = writeln!(out, "  {line}");
    }
    let _ = writeln!(
        out,
        "chunks: {} of at most {}",
        m.chunks.len(),
        Human(m.chunk_size)
    );
    let _ = writeln!(
        out,
        "payload: {} ({} bytes), sha256 {}",
        Human(m.payload.size),
        m.payload.size,
        m.payload.sha256
    );
    let _ = writeln!(
        out,
        "compression: {} → {}, ratio {}",
        Human(content),
        Human(m.payload.size),
        ratio(content, m.payload.size)
    );
    let _ = writeln!(
        out,
        "time: built in {} ({}), verified in {}",
        seconds(imported.build_time),
        rate(content, imported.build_time),
        seconds(imported.verify_time),
    );
    if let Some(t) = &imported.torrent {
        let _ = writeln!(out, "{}", torrent_line(t));
    }
    let _ = writeln!(out, "signed by key {}", imported.signer);
    out
}

/// `torrent: 1600 pieces of 32.0 KiB, info-hash …`.
pub fn torrent_line(t: &crate::torrent_file::Checked) -> String {
    format!(
        "torrent: {} pieces of {}, info-hash {}",
        t.pieces,
        Human(t.piece_length.into()),
        t.info_hash
    )
}

fn seconds(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// `123.4 MB/s` of uncompressed content (decimal megabytes, like `dd`).
fn rate(bytes: u64, d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs <= 0.0 {
        return "- MB/s".into();
    }
    format!("{:.1} MB/s", bytes as f64 / secs / 1e6)
}

/// Left-aligned columns two spaces apart; trailing blanks trimmed.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; columns];
    for row in rows {
        // A row shorter than the header (an error message) does not widen
        // the columns it spills over.
        if row.len() == columns {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns() {
        let rows = vec![
            vec!["A".to_owned(), "BB".to_owned(), String::new()],
            vec!["ccc".to_owned(), "d".to_owned(), "x".to_owned()],
            vec!["e".to_owned(), "a long error".to_owned()],
        ];
        assert_eq!(table(&rows), "A    BB\nccc  d   x\ne    a long error\n");
    }

    #[test]
    fn ratios_and_rates() {
        assert_eq!(ratio(250, 100), "2.50");
        assert_eq!(ratio(1, 0), "-");
        assert_eq!(rate(50_000_000, Duration::from_millis(500)), "100.0 MB/s");
        assert_eq!(rate(1, Duration::ZERO), "- MB/s");
        assert_eq!(seconds(Duration::from_millis(1234)), "1.23 s");
    }
}
