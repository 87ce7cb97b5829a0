//! Chunks over HTTP: one ranged GET of `payload` per chunk, retried with
//! backoff so a network drop or a server restart costs a pause, not the
//! deploy. Resuming is the pipeline's job: it asks again for the first
//! chunk it has not verified.

use std::time::Duration;

use anyhow::{Context, Result};

use crate::fetch::Client;
use crate::image::{ChunkEntry, ChunkSource};

/// Backoff between attempts, seconds; the last value repeats. Also the
/// pause between rounds over the servers while none can be reached for the
/// manifest.
pub(crate) const BACKOFF: &[u64] = &[1, 2, 4, 8, 15];

#[derive(Clone)]
pub struct HttpSource {
    pub client: Client,
    /// Server path of the payload, `/images/NAME/VERSION/payload`.
    pub path: String,
    /// Attempts per chunk before giving up.
    pub attempts: usize,
}

impl ChunkSource for HttpSource {
    fn fetch(&mut self, index: usize, entry: &ChunkEntry) -> Result<Vec<u8>> {
        let len = usize::try_from(entry.length).context("chunk length does not fit in memory")?;
        let mut attempt = 1;
        loop {
            match self.client.get_range(&self.path, entry.offset, len) {
                Ok(b) => return Ok(b),
                Err(e) if attempt < self.attempts => {
                    let wait = BACKOFF[(attempt - 1).min(BACKOFF.len() - 1)];
                    log::warn!(
                        "chunk {index}: {e:#}; retrying in {wait}s (attempt {attempt}/{})",
                        self.attempts
                    );
                    std::thread::sleep(Duration::from_secs(wait));
                    attempt += 1;
                }
                Err(e) => {
                    return Err(
                        e.context(format!("chunk {index}: giving up after {attempt} attempts"))
                    )
                }
            }
        }
    }
}
