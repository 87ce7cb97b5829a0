//! DHCP replies come from anyone on the deploy network: decoding must never
//! panic, and a decoded reply must yield a lease without panicking either.

#![no_main]

use drover_agent::net::dhcp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(reply) = dhcp::decode(data) {
        let lease = dhcp::Lease::from_ack(&reply);
        assert!(lease.prefix_len() <= 32);
    }
});
