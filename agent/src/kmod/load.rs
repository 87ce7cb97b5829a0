//! Loading one module file into the kernel.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use rustix::io::Errno;

/// `MODULE_INIT_COMPRESSED_FILE` (Linux ≥ 5.17 with CONFIG_MODULE_DECOMPRESS):
/// the kernel inflates the module itself.
const MODULE_INIT_COMPRESSED_FILE: i32 = 4;

/// Load the module at `path` with `finit_module`. Compressed modules
/// (`.ko.xz`, `.ko.zst`, `.ko.gz`) are handed to the kernel to inflate;
/// if it cannot, gzip ones are inflated here. "Already loaded" is reported
/// as `AlreadyExists`.
pub fn load_module(path: &Path) -> io::Result<()> {
    let file = File::open(path)?;
    let name = path.to_string_lossy();
    let compressed = !name.ends_with(".ko");
    let flags = if compressed {
        MODULE_INIT_COMPRESSED_FILE
    } else {
        0
    };
    let result = rustix::system::finit_module(&file, c"", flags);
    let result = match result {
        Err(Errno::INVAL | Errno::NOPKG | Errno::OPNOTSUPP) if name.ends_with(".ko.gz") => {
            let mut image = Vec::new();
            flate2::read::GzDecoder::new(file).read_to_end(&mut image)?;
            rustix::system::init_module(&image, c"")
        }
        other => other,
    };
    match result {
        Ok(()) => Ok(()),
        Err(Errno::EXIST) => Err(io::Error::from(io::ErrorKind::AlreadyExists)),
        Err(e) => Err(e.into()),
    }
}
