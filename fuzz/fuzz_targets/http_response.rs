//! HTTP response heads and chunked bodies come from the network: parsing
//! must never panic and dechunking must respect its limit.

#![no_main]

use drover_agent::fetch::response;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(end) = response::head_end(data) {
        let _ = response::parse_head(&data[..end]);
        if let Ok(body) = response::dechunk(&data[end..], 4096) {
            assert!(body.len() <= 4096);
        }
    }
});
