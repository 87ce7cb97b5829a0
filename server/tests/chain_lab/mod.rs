//! A chain on loopback: a real coordinator (HTTP) and head (TCP) on a
//! tokio runtime, an image built with `ImageBuilder` in a temporary store,
//! and relay nodes as threads, each streaming through the agent's real
//! verify → inflate pipeline into its own files.

#![allow(dead_code)] // each test file uses part of it

use std::collections::HashMap;
use std::fs::File;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use drover_agent::chain::api::SessionStatus;
use drover_agent::chain::{self, ChainOptions, ChainSource, RelayConfig, RelayHandle, RelayStats};
use drover_agent::image::{
    stream_source_with, BuildOptions, ChunkSource, ContentKind, Filesystem, ImageBuilder, Manifest,
    PartSize, PartSpec, SourceProgress, TypeGuid,
};
use drover_server::chain::{
    routes, serve_head, Coordinator, CoordinatorConfig, HeadConfig, SessionConfig, StaticTokens,
    StoreImages,
};
use drover_server::store::Store;
use kernel_cmdline::{MacAddr, ServerUrl};

pub const CHUNK: u64 = 32 << 10;
/// The PART size heads and relays use here: a quarter chunk.
pub const PART_BYTES: usize = 8 << 10;
pub const ADMIN: &str = "admin-token";

pub fn mac(i: u8) -> MacAddr {
    MacAddr([0x52, 0x54, 0, 0xc0, 0, i])
}

pub fn token(i: u8) -> String {
    format!("node-token-{i}")
}

/// Pseudo-random bytes (xorshift): incompressible, reproducible.
pub fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub struct Lab {
    pub rt: tokio::runtime::Runtime,
    /// The head runs on its own runtime, so that it can vanish whole.
    pub head_rt: Option<tokio::runtime::Runtime>,
    pub dir: tempfile::TempDir,
    pub coordinator: Arc<Coordinator>,
    pub server: ServerUrl,
    pub head: SocketAddr,
    pub manifest: Arc<Manifest>,
    pub payload: Vec<u8>,
    /// Each partition's content, as built.
    pub contents: Vec<Vec<u8>>,
    pub session: chain::SessionId,
}

/// Timers short enough for tests, long enough for a loaded 2-core machine.
pub fn relay_config() -> RelayConfig {
    RelayConfig {
        ring_bytes: 8 * CHUNK as usize,
        connect_timeout: Duration::from_secs(2),
        io_timeout: Duration::from_secs(3),
        keepalive: Duration::from_millis(200),
        stall_timeout: Duration::from_secs(3),
        fallback_after: Duration::from_secs(20),
        max_downstreams: 8,
        downstream_grace: Duration::from_secs(1),
        retry_pause: Duration::from_millis(100),
        part_bytes: PART_BYTES,
        forward_tap: None,
    }
}

pub fn session_config(expected: u32) -> SessionConfig {
    SessionConfig {
        arity: 1,
        expected: Some(expected),
        join_timeout: Duration::from_secs(10),
        heartbeat: Duration::from_millis(200),
        dead_after: Duration::from_millis(1500),
        // No slow moves or probes unless a test asks for them: the shapes
        // these tests expect must not depend on the machine's load.
        slow_after: Duration::from_secs(60),
        slow_window: Duration::from_secs(60),
        corrupt_strikes: 2,
    }
}

impl Lab {
    /// An image of ~`mib` MiB in 32 KiB chunks (a compressible 1 MiB
    /// partition, then noise), its session opened with `cfg`, the head
    /// sending each stream at `rate` bytes/s.
    pub fn new(mib: usize, cfg: SessionConfig, rate: Option<u64>) -> Lab {
        let _ = env_logger_init();
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let contents = vec![
            b"drover chain test\n"
                .iter()
                .copied()
                .cycle()
                .take(1 << 20)
                .collect::<Vec<u8>>(),
            noise((mib.max(2) - 1) << 20, 0x5eed),
        ];
        let opts = BuildOptions {
            chunk_size: CHUNK,
            level: 1,
            threads: 2,
        };
        let mut b = ImageBuilder::new(
            &store.join("chaintest").join("1.0"),
            "chaintest",
            "1.0",
            opts,
        )
        .unwrap();
        for (i, data) in contents.iter().enumerate() {
            let spec = PartSpec {
                label: format!("p{i}"),
                type_guid: TypeGuid::parse(TypeGuid::LINUX_FS).unwrap(),
                size: if i + 1 == contents.len() {
                    PartSize::Rest
                } else {
                    PartSize::Bytes(1 << 20)
                },
                attributes: Vec::new(),
                filesystem: Filesystem::None,
            };
            b.add_partition(spec, Some((ContentKind::Raw, &mut &data[..])))
                .unwrap();
        }
        let manifest = Arc::new(b.finish().unwrap());
        let payload = std::fs::read(store.join("chaintest/1.0/payload")).unwrap();
        let session = chain::SessionId::of(&manifest);

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let http = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let head_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let head_l = head_rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let head = head_l.local_addr().unwrap();
        let server: ServerUrl = format!("http://{}", http.local_addr().unwrap())
            .parse()
            .unwrap();
        let auth = StaticTokens {
            nodes: (1..=32)
                .map(|i| (mac(i), token(i)))
                .collect::<HashMap<_, _>>(),
            admin: Some(ADMIN.into()),
        };
        let images = Arc::new(StoreImages::new(Store::new(&store)));
        let coordinator = Coordinator::new(
            CoordinatorConfig {
                head,
                defaults: cfg.clone(),
            },
            Arc::new(auth),
            images.clone(),
        );
        rt.block_on(coordinator.open_session(&session, cfg))
            .unwrap();
        let app = routes::<()>(coordinator.clone());
        rt.spawn(async move {
            axum::serve(
                http,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap()
        });
        let head_cfg = HeadConfig {
            io_timeout: Duration::from_secs(3),
            max_connections: 64,
            max_rate: rate,
            // Chunks here are 32 KiB: smaller parts, so that nodes forward
            // parts of a chunk before they have it whole (cut-through).
            part_bytes: PART_BYTES,
        };
        head_rt.spawn(serve_head(head_l, images, head_cfg));
        rt.spawn(coordinator.clone().run_ticker(Duration::from_millis(200)));
        Lab {
            rt,
            head_rt: Some(head_rt),
            dir,
            coordinator,
            server,
            head,
            manifest,
            payload,
            contents,
            session,
        }
    }

    /// The head vanishes: its listener and every stream it was sending.
    pub fn kill_head(&mut self) {
        if let Some(rt) = self.head_rt.take() {
            rt.shutdown_background();
        }
    }

    pub fn options(&self, i: u8, relay: RelayConfig) -> ChainOptions {
        ChainOptions {
            servers: vec![self.server.clone()],
            token: Some(token(i)),
            mac: mac(i),
            listen: "127.0.0.1:0".parse().unwrap(),
            advertise: None,
            relay,
        }
    }

    /// Join node `i` and deploy it on a thread; `delay` per chunk written.
    pub fn spawn(&self, i: u8, relay: RelayConfig, delay: Duration) -> Node {
        self.spawn_with(i, relay, delay, None)
    }

    /// [`Lab::spawn`] with a fallback source (plain HTTP on a node).
    pub fn spawn_with(
        &self,
        i: u8,
        relay: RelayConfig,
        delay: Duration,
        fallback: Option<Box<dyn ChunkSource + Send>>,
    ) -> Node {
        let source = chain::deploy_source(self.options(i, relay), self.manifest.clone(), fallback)
            .expect("joining");
        let handle = source.handle();
        let out = self.dir.path().join(format!("node{i}"));
        std::fs::create_dir_all(&out).unwrap();
        let m = self.manifest.clone();
        let started = Instant::now();
        let (o, mut source) = (out.clone(), source);
        let thread = std::thread::spawn(move || {
            let r = consume(&m, &mut source, &o, delay);
            let done = started.elapsed();
            let stats = source.finish(Duration::from_secs(10));
            r.map(|()| (done, stats))
        });
        Node {
            i,
            handle,
            thread: Some(thread),
            out,
        }
    }

    pub fn status(&self) -> SessionStatus {
        self.coordinator.status(&self.session).unwrap()
    }

    pub fn node_state(&self, i: u8) -> String {
        let st = self.status();
        let m = mac(i).to_string();
        st.nodes
            .into_iter()
            .find(|n| n.mac == m)
            .map(|n| n.state)
            .unwrap_or_default()
    }

    /// What node `i` wrote equals what was built, byte for byte.
    pub fn check_output(&self, node: &Node) {
        let got = std::fs::read(node.out.join("payload")).unwrap();
        assert!(got == self.payload, "node {}: payload differs", node.i);
        for (p, want) in self.contents.iter().enumerate() {
            let got = std::fs::read(node.out.join(format!("p{p}"))).unwrap();
            assert!(got == *want, "node {}: partition {p} differs", node.i);
        }
    }
}

pub struct Node {
    pub i: u8,
    pub handle: RelayHandle,
    pub thread: Option<JoinHandle<anyhow::Result<(Duration, RelayStats)>>>,
    pub out: PathBuf,
}

impl Node {
    /// The deploy's result: time to the last chunk written, and counters.
    pub fn join(&mut self) -> anyhow::Result<(Duration, RelayStats)> {
        self.thread.take().unwrap().join().unwrap()
    }
}

/// The agent's pipeline over the chain: every source streamed (verified,
/// inflated, hashed) into `out/pN`, the compressed chunks into
/// `out/payload`.
fn consume(m: &Manifest, src: &mut ChainSource, out: &Path, delay: Duration) -> anyhow::Result<()> {
    let mut payload = File::create(out.join("payload"))?;
    for (part, _, _) in m.sources() {
        let f = File::create(out.join(format!("p{part}")))?;
        let mut progress = SourceProgress::new(m, part)?;
        stream_source_with(
            m,
            &mut progress,
            src,
            |c| Ok(payload.write_all(c.bytes())?),
            |off, data| {
                f.write_at(data, off)?;
                std::thread::sleep(delay);
                Ok(())
            },
        )?;
    }
    Ok(())
}

/// Wait for `cond`, up to `limit`.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn env_logger_init() -> Result<(), ()> {
    // RUST_LOG=info shows the relay and coordinator lines when debugging.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .is_test(true)
        .try_init()
        .map_err(|_| ())
}
