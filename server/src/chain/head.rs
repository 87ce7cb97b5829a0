//! The head of every chain: a TCP listener speaking the relay protocol
//! (`drover_agent::chain::frame`) from the image's payload file — an
//! upstream whose replay buffer is the whole image, so it never refuses a
//! chunk as too old. Whoever the coordinator sends here (the first node,
//! nodes catching up, nodes cut out of the chain) is served from the
//! chunk it asks for to the end.

use std::io::{self, SeekFrom};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use drover_agent::chain::frame::{
    chunk_header, decode_body, frame_len, part_header, Frame, Refuse, RefuseCode, CONTROL_LIMIT,
    PART_MAX, PART_MIN,
};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::timeout;

use super::lookup::ImageLookup;

/// Limits of the head listener.
#[derive(Debug, Clone)]
pub struct HeadConfig {
    /// HELLO, and every chunk's write, must finish within this.
    pub io_timeout: Duration,
    /// Streams served at once; more connections are closed at once.
    pub max_connections: usize,
    /// Each stream sends at most this many bytes per second (`None`: as
    /// fast as the downstream takes them), to leave the server's link to
    /// other traffic, or to pace a test.
    pub max_rate: Option<u64>,
    /// The largest PART sent to a version-2 downstream (clamped to
    /// `PART_MIN..=PART_MAX`).
    pub part_bytes: usize,
}

impl Default for HeadConfig {
    fn default() -> Self {
        HeadConfig {
            io_timeout: Duration::from_secs(15),
            max_connections: 256,
            max_rate: None,
            part_bytes: PART_MAX,
        }
    }
}

/// Serve downstreams on `listener` until the task is dropped.
pub async fn serve_head(
    listener: TcpListener,
    images: Arc<dyn ImageLookup>,
    cfg: HeadConfig,
) -> io::Result<()> {
    log::info!("chain head: serving chunks on {}", listener.local_addr()?);
    let slots = Arc::new(Semaphore::new(cfg.max_connections));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: pause, do not spin.
                log::warn!("chain head: accepting: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            let msg = format!("the head already serves {} streams", cfg.max_connections);
            log::warn!("chain head: {peer}: {msg}");
            tokio::spawn(async move {
                let mut stream = stream;
                let _ = refuse(&mut stream, RefuseCode::Busy, msg).await;
            });
            continue;
        };
        let (images, cfg) = (images.clone(), cfg.clone());
        tokio::spawn(async move {
            let _slot = slot;
            match serve_one(stream, peer, images, &cfg).await {
                Ok(()) => {}
                Err(e) => log::info!("chain head: {peer}: {e}"),
            }
        });
    }
}

async fn refuse(s: &mut TcpStream, code: RefuseCode, message: String) -> Result<(), String> {
    let f = Frame::Refuse(Refuse {
        code,
        oldest: 0,
        message: message.clone(),
    });
    let _ = s.write_all(&f.encode()).await;
    let _ = s.shutdown().await;
    Err(format!("refused: {message}"))
}

async fn read_hello(s: &mut TcpStream) -> io::Result<Result<Frame, String>> {
    let mut prefix = [0u8; 4];
    s.read_exact(&mut prefix).await?;
    let len = match frame_len(prefix, CONTROL_LIMIT) {
        Ok(l) => l,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await?;
    Ok(decode_body(body).map_err(|e| e.to_string()))
}

async fn serve_one(
    mut s: TcpStream,
    peer: SocketAddr,
    images: Arc<dyn ImageLookup>,
    cfg: &HeadConfig,
) -> Result<(), String> {
    let io = cfg.io_timeout;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let hello = match timeout(io, read_hello(&mut s)).await {
        Err(_) => return Err("no HELLO in time".into()),
        Ok(Err(e)) => return Err(format!("reading HELLO: {e}")),
        Ok(Ok(Ok(Frame::Hello(h)))) => h,
        Ok(Ok(Ok(_))) => {
            return refuse(&mut s, RefuseCode::BadHello, "expected HELLO".into()).await
        }
        Ok(Ok(Err(e))) => return refuse(&mut s, RefuseCode::BadHello, e).await,
    };
    let session = hello.session.clone();
    let info = match tokio::task::spawn_blocking(move || images.image(&session)).await {
        Ok(Ok(info)) => info,
        Ok(Err(e)) => return refuse(&mut s, RefuseCode::UnknownSession, e).await,
        Err(e) => return Err(e.to_string()),
    };
    let chunks = &info.manifest.chunks;
    let total = chunks.len() as u32;
    if hello.want > total {
        let msg = format!("chunk {} is past the end ({total})", hello.want);
        return refuse(&mut s, RefuseCode::BadHello, msg).await;
    }
    log::info!(
        "chain head: {} ({peer}): {} from chunk {}",
        hello.mac,
        hello.session,
        hello.want
    );
    let welcome = Frame::Welcome {
        start: hello.want,
        total,
    };
    write(&mut s, io, &welcome.encode()).await?;
    let mut file = tokio::fs::File::open(&info.payload)
        .await
        .map_err(|e| format!("opening {}: {e}", info.payload.display()))?;
    let mut at = None;
    let (started, mut sent) = (tokio::time::Instant::now(), 0u64);
    for i in hello.want..total {
        let e = &chunks[i as usize];
        if at != Some(e.offset) {
            file.seek(SeekFrom::Start(e.offset))
                .await
                .map_err(|e| format!("seeking the payload: {e}"))?;
        }
        // The manifest was validated: lengths are bounded.
        let mut buf = vec![0u8; e.length as usize];
        file.read_exact(&mut buf)
            .await
            .map_err(|err| format!("reading chunk {i} of {}: {err}", info.payload.display()))?;
        at = Some(e.offset + e.length);
        if hello.version < 2 {
            pace(cfg, started, sent).await;
            write(&mut s, io, &chunk_header(i, buf.len())).await?;
            write(&mut s, io, &buf).await?;
            sent += e.length;
            continue;
        }
        // In parts, so the first node forwards each part as it arrives
        // (cut-through; see the frame module).
        let max = cfg.part_bytes.clamp(PART_MIN, PART_MAX);
        for (k, part) in buf.chunks(max).enumerate() {
            pace(cfg, started, sent).await;
            let offset = (k * max) as u32;
            write(&mut s, io, &part_header(i, offset, part.len())).await?;
            write(&mut s, io, part).await?;
            sent += part.len() as u64;
        }
    }
    // Let the downstream close first, so nothing sent is lost to a reset.
    let _ = s.shutdown().await;
    let mut sink = [0u8; 64];
    let _ = timeout(io, async {
        while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
    Ok(())
}

/// Not before the time `sent` bytes take at the configured rate.
async fn pace(cfg: &HeadConfig, started: tokio::time::Instant, sent: u64) {
    if let Some(rate) = cfg.max_rate.filter(|r| *r > 0) {
        let due = Duration::from_secs_f64(sent as f64 / rate as f64);
        tokio::time::sleep_until(started + due).await;
    }
}

async fn write(s: &mut TcpStream, io: Duration, bytes: &[u8]) -> Result<(), String> {
    match timeout(io, s.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("sending: {e}")),
        Err(_) => Err(format!(
            "the downstream did not take a write in {}s",
            io.as_secs()
        )),
    }
}
