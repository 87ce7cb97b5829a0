//! The rules of `manifest.json`, checked after decoding. Each failure names
//! where (`chunk 17`, `partition 2 (root)`) and what is wrong. All
//! arithmetic is checked: the input is untrusted until this returns Ok.

use std::collections::HashSet;

use super::manifest::{
    max_chunk_length, partition_name, ContentKind, Filesystem, Manifest, ManifestError, PartSize,
    Partition, TypeGuid, CHUNK_ALIGN, FORMAT, GPT_OVERHEAD, MAX_BOOT_CODE, MAX_CHUNKS,
    MAX_CHUNK_SIZE, MAX_PARTITIONS, MIB,
};

type Result<T = ()> = std::result::Result<T, ManifestError>;

fn invalid(at: impl std::fmt::Display, msg: impl std::fmt::Display) -> ManifestError {
    ManifestError::invalid(at, msg)
}

/// All rules, in the order a reader would check them by hand.
pub(crate) fn manifest(m: &Manifest) -> Result {
    if m.format != FORMAT {
        let msg = format!("{} is not supported (this drover reads {FORMAT})", m.format);
        return Err(invalid("format", msg));
    }
    ident("name", &m.name)?;
    ident("version", &m.version)?;
    chunk_size(m.chunk_size)?;
    chunks(m)?;
    partitions(m)?;
    contents(m)?;
    disk(m)?;
    boot(m)
}

/// What [`is_component`] accepts, for messages.
pub const COMPONENT_ACCEPTED: &str = "1 to 128 of A-Z a-z 0-9 . _ - (and not . or ..)";

/// `[A-Za-z0-9._-]{1,128}`, not `.`/`..`: one safe path component, the
/// rule for image names and versions on both ends (store paths, URLs).
pub fn is_component(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// [`is_component`], as a validation error naming `what`.
pub(crate) fn ident(what: &str, s: &str) -> Result {
    if is_component(s) {
        Ok(())
    } else {
        let msg = format!("{s:?} is not {COMPONENT_ACCEPTED}");
        Err(invalid(what, msg))
    }
}

pub(crate) fn chunk_size(size: u64) -> Result {
    if size == 0 || !size.is_multiple_of(CHUNK_ALIGN) || size > MAX_CHUNK_SIZE {
        let msg = format!(
            "{size} is not a multiple of {CHUNK_ALIGN} between {CHUNK_ALIGN} and {MAX_CHUNK_SIZE}"
        );
        return Err(invalid("chunk_size", msg));
    }
    Ok(())
}

/// Offsets contiguous from 0, lengths and sizes in bounds, lengths summing
/// to the payload size.
fn chunks(m: &Manifest) -> Result {
    if m.chunks.len() > MAX_CHUNKS {
        let msg = format!("{} chunks, more than {MAX_CHUNKS}", m.chunks.len());
        return Err(invalid("chunks", msg));
    }
    let max_length = max_chunk_length(m.chunk_size);
    let mut end = 0u64;
    for (i, c) in m.chunks.iter().enumerate() {
        let at = format!("chunk {i}");
        if c.offset != end {
            let msg = if i == 0 {
                format!("offset {} but the first chunk starts at 0", c.offset)
            } else {
                format!("offset {} but previous chunk ends at {end}", c.offset)
            };
            return Err(invalid(at, msg));
        }
        if c.length == 0 || c.length > max_length {
            let msg = format!("length {} is not between 1 and {max_length}", c.length);
            return Err(invalid(at, msg));
        }
        if c.size == 0 || c.size > m.chunk_size {
            let msg = format!(
                "size {} is not between 1 and chunk_size {}",
                c.size, m.chunk_size
            );
            return Err(invalid(at, msg));
        }
        end = end
            .checked_add(c.length)
            .ok_or_else(|| invalid(&at, "payload offsets overflow"))?;
    }
    if end != m.payload.size {
        let msg = format!("size {} but the chunks add up to {end}", m.payload.size);
        return Err(invalid("payload", msg));
    }
    Ok(())
}

/// Per-partition rules that don't involve the chunk table.
fn partitions(m: &Manifest) -> Result {
    let parts = &m.disk.partitions;
    if parts.is_empty() || parts.len() > MAX_PARTITIONS {
        let msg = format!("{} partitions, not 1 to {MAX_PARTITIONS}", parts.len());
        return Err(invalid("disk", msg));
    }
    let mut labels = HashSet::new();
    for (i, p) in parts.iter().enumerate() {
        let at = partition_name(i, &p.label);
        // GPT names are 36 UTF-16 code units; control characters would
        // garble console messages and /dev/disk/by-partlabel names.
        if p.label.encode_utf16().count() > 36 || p.label.chars().any(char::is_control) {
            let msg = "label is longer than 36 UTF-16 units or has control characters";
            return Err(invalid(at, msg));
        }
        if !p.label.is_empty() && !labels.insert(p.label.as_str()) {
            return Err(invalid(at, "label is used by an earlier partition"));
        }
        let mut seen = HashSet::new();
        if let Some(a) = p.attributes.iter().find(|a| !seen.insert(**a)) {
            return Err(invalid(at, format!("attribute {a:?} is listed twice")));
        }
        match p.size {
            PartSize::Bytes(n) if n == 0 || !n.is_multiple_of(MIB) => {
                let msg = format!("size {n} is not a non-zero multiple of 1 MiB ({MIB})");
                return Err(invalid(at, msg));
            }
            PartSize::Rest if i + 1 != parts.len() => {
                return Err(invalid(
                    at,
                    "size \"rest\" is allowed on the last partition only",
                ));
            }
            _ => {}
        }
        content_kind(&at, p)?;
    }
    Ok(())
}

/// What a content kind requires of its partition.
fn content_kind(at: &str, p: &Partition) -> Result {
    let Some(c) = &p.content else { return Ok(()) };
    match c.kind {
        ContentKind::Tar => {
            if !matches!(p.filesystem, Filesystem::Ext4 | Filesystem::Vfat) {
                let msg = "tar content needs filesystem ext4 or vfat to extract onto";
                return Err(invalid(at, msg));
            }
            let (Some(entries), Some(file_bytes)) = (c.entries, c.file_bytes) else {
                return Err(invalid(at, "tar content without entries and file_bytes"));
            };
            // Every entry has a 512-byte header and file data is inside the
            // stream, so both are bounded by its size.
            if file_bytes > c.size || entries > c.size / 512 {
                let msg = format!(
                    "{entries} entries / {file_bytes} file bytes cannot fit in a {}-byte tar stream",
                    c.size
                );
                return Err(invalid(at, msg));
            }
        }
        ContentKind::Raw => {
            if c.entries.is_some() || c.file_bytes.is_some() {
                return Err(invalid(
                    at,
                    "raw content with entries or file_bytes (tar only)",
                ));
            }
            if let PartSize::Bytes(n) = p.size {
                if c.size > n {
                    let msg = format!("raw content of {} bytes is larger than size {n}", c.size);
                    return Err(invalid(at, msg));
                }
            }
        }
    }
    Ok(())
}

/// Content ranges: in partition order, contiguous from chunk 0, covering
/// every chunk exactly once; each chunk full-size except a source's last.
fn contents(m: &Manifest) -> Result {
    let mut next = 0usize;
    for (i, p, c) in m.sources() {
        let at = partition_name(i, &p.label);
        if c.first_chunk != next {
            let msg = format!(
                "content starts at chunk {} but the previous content ends at chunk {next}",
                c.first_chunk
            );
            return Err(invalid(at, msg));
        }
        if c.size == 0 {
            return Err(invalid(at, "content of size 0 (use \"content\": null)"));
        }
        let want = c.size.div_ceil(m.chunk_size);
        if u64::try_from(c.chunks).ok() != Some(want) {
            let msg = format!(
                "content of {} bytes at chunk_size {} needs {want} chunks, not {}",
                c.size, m.chunk_size, c.chunks
            );
            return Err(invalid(at, msg));
        }
        let end = c.first_chunk.saturating_add(c.chunks);
        let Some(entries) = m.chunks.get(c.first_chunk..end) else {
            let msg = format!(
                "content chunks {}+{} run past the {} chunks",
                c.first_chunk,
                c.chunks,
                m.chunks.len()
            );
            return Err(invalid(at, msg));
        };
        let mut left = c.size;
        for (j, e) in entries.iter().enumerate() {
            let expect = left.min(m.chunk_size);
            if e.size != expect {
                let index = c.first_chunk + j;
                let msg = format!(
                    "size {} but {at} expects {expect} (only a source's last chunk may be short)",
                    e.size
                );
                return Err(invalid(format!("chunk {index}"), msg));
            }
            left -= expect;
        }
        next = end;
    }
    if next != m.chunks.len() {
        let msg = "belongs to no partition's content (the chunk table is longer than the contents)";
        return Err(invalid(format!("chunk {next}"), msg));
    }
    Ok(())
}

/// The smallest disk the partitions fit on: the GPT overhead, every fixed
/// size, and for a `rest` partition at least 1 MiB, or its raw content / tar
/// file bytes rounded up to 1 MiB. `None` on overflow.
pub fn required_disk_size(parts: &[Partition]) -> Option<u64> {
    let mut total = GPT_OVERHEAD;
    for p in parts {
        let size = match p.size {
            PartSize::Bytes(n) => n,
            PartSize::Rest => {
                let need = match &p.content {
                    Some(c) if c.kind == ContentKind::Raw => c.size,
                    Some(c) => c.file_bytes.unwrap_or(0),
                    None => 0,
                };
                need.checked_next_multiple_of(MIB)?.max(MIB)
            }
        };
        total = total.checked_add(size)?;
    }
    Some(total)
}

fn disk(m: &Manifest) -> Result {
    if let Some(code) = &m.disk.bios_boot_code {
        if code.0.is_empty() || code.0.len() > MAX_BOOT_CODE {
            let msg = format!("{} bytes, not 1 to {MAX_BOOT_CODE}", code.0.len());
            return Err(invalid("disk.bios_boot_code", msg));
        }
    }
    let need = required_disk_size(&m.disk.partitions)
        .ok_or_else(|| invalid("disk", "partition sizes overflow"))?;
    if m.disk.min_size < need {
        let msg = format!(
            "{} but the partitions and the GPT need at least {need}",
            m.disk.min_size
        );
        return Err(invalid("disk.min_size", msg));
    }
    Ok(())
}

fn boot(m: &Manifest) -> Result {
    if m.boot.uefi {
        let esp = m
            .disk
            .partitions
            .iter()
            .any(|p| p.type_guid.as_str() == TypeGuid::ESP && p.filesystem == Filesystem::Vfat);
        if !esp {
            let msg = "uefi needs an ESP partition (type C12A7328-…) with filesystem vfat";
            return Err(invalid("boot", msg));
        }
    }
    match (m.boot.bios, m.disk.bios_boot_code.is_some()) {
        (true, false) => Err(invalid("boot", "bios needs disk.bios_boot_code")),
        (false, true) => Err(invalid(
            "boot",
            "disk.bios_boot_code is set but bios is false",
        )),
        _ => Ok(()),
    }
}
