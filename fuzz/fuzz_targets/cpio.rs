//! The cpio reader (used to verify built initramfs images) must reject
//! malformed archives without panicking.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = drover_initramfs::cpio::list(data);
});
