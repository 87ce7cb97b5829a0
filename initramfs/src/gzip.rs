//! Reproducible gzip: the kernel unpacks a gzip initrd itself (CONFIG_RD_GZIP,
//! enabled in every distribution kernel), so no other codec is needed.

use std::io::{self, Read, Write};

use flate2::{Compression, GzBuilder};

/// gzip's OS byte for Unix. flate2 would write 255 ("unknown"); pinning it
/// keeps the header independent of any library default.
const OS_UNIX: u8 = 3;

/// Compresses `data` with a fixed header (mtime 0, no file name, OS Unix).
/// miniz_oxide is pure Rust and deterministic, so equal input gives equal
/// output on every machine. Best compression: the initrd crosses the network
/// once per node, and the kernel inflates any level at the same speed.
pub fn compress(data: &[u8]) -> Vec<u8> {
    let out = Vec::with_capacity(data.len() / 2);
    let mut encoder = GzBuilder::new()
        .mtime(0)
        .operating_system(OS_UNIX)
        .write(out, Compression::best());
    encoder
        .write_all(data)
        .and_then(|()| encoder.finish())
        .expect("compressing into a Vec cannot fail")
}

/// Inflates a gzip stream (used to verify what [`compress`] wrote).
pub fn decompress(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data).read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_fixed_and_round_trips() {
        let data = b"drover initramfs ".repeat(100);
        let gz = compress(&data);
        // magic, CM=deflate, FLG=0, MTIME=0, XFL=2 (best), OS=Unix
        assert_eq!(&gz[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 3]);
        assert_eq!(compress(&data), gz);
        assert_eq!(decompress(&gz).unwrap(), data);
        assert!(decompress(&gz[..gz.len() - 4]).is_err());
    }
}
