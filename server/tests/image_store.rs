//! The real `drover-server` binary end to end: key generation, imports of a
//! raw file, a directory tree and a .tar.gz, list/show/verify, a tampered
//! payload caught at its chunk, then `serve` answering manifest, ranged
//! payload and `latest` requests over real TCP (the agent's own HTTP client
//! and hand-written requests).

mod common;
use common::serve;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use drover_agent::fetch::Client;
use drover_agent::image::pipeline::SourceReader;
use drover_agent::image::{FileSource, Manifest};

use common::BIN;

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running drover-server")
}

/// Run, expect success, return stdout.
fn ok(args: &[&str]) -> String {
    let out = run(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?} failed:\n{stdout}\n{stderr}");
    stdout
}

/// Run, expect failure, return stderr.
fn fails(args: &[&str]) -> String {
    let out = run(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{args:?} should fail:\n{stderr}"
    );
    stderr
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Bytes that compress somewhat but not trivially.
fn patterned(len: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_u32;
    (0..len)
        .map(|i| {
            if i % 3 == 0 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
            }
            (x as u8) & 0x3f
        })
        .collect()
}

/// A root tree: a file, a symlink, a nested directory with a file.
fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("etc/nested/deeper")).unwrap();
    std::fs::write(root.join("etc/hostname"), b"node-1\n").unwrap();
    std::fs::write(root.join("etc/nested/deeper/data"), patterned(70_000)).unwrap();
    std::os::unix::fs::symlink("../usr/share/zoneinfo/UTC", root.join("etc/localtime")).unwrap();
}

/// A .tar.gz with one file.
fn make_tar_gz(path: &Path) {
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::default(),
    );
    let mut b = tar::Builder::new(gz);
    let mut h = tar::Header::new_gnu();
    h.set_size(6);
    h.set_mode(0o644);
    b.append_data(&mut h, "etc/motd", &b"hello\n"[..]).unwrap();
    b.into_inner().unwrap().finish().unwrap();
}

/// Every (path, type, link target, contents) of partition `index`'s tar
/// content, read back through the agent's pipeline.
fn tar_entries(
    image: &Path,
    index: usize,
) -> Vec<(String, tar::EntryType, Option<String>, Vec<u8>)> {
    let manifest = Manifest::parse(&std::fs::read(image.join("manifest.json")).unwrap()).unwrap();
    let mut source = FileSource::open(&image.join("payload")).unwrap();
    let mut reader = SourceReader::new(&manifest, index, &mut source).unwrap();
    let mut out = Vec::new();
    {
        let mut archive = tar::Archive::new(&mut reader);
        for entry in archive.entries().unwrap() {
            let mut e = entry.unwrap();
            let path = String::from_utf8(e.path_bytes().into_owned()).unwrap();
            let link = e
                .link_name_bytes()
                .map(|l| String::from_utf8(l.into_owned()).unwrap());
            let kind = e.header().entry_type();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            out.push((path, kind, link, data));
        }
    }
    reader.finish().unwrap();
    out
}

/// One raw HTTP/1.1 request; (status line, headers lowercased, body).
fn raw_request(addr: SocketAddr, request: &str) -> (String, Vec<(String, String)>, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).unwrap();
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(bytes[..end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().to_owned();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    (status, headers, bytes[end + 4..].to_vec())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn key_import_list_show_verify_tamper_and_serve() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let keys = dir.join("keys");
    let store = dir.join("store");

    // Keys: a pair, the secret private, never clobbered without --force.
    let out = ok(&["key", "generate", "--out", s(&keys)]);
    let secret = keys.join("drover.key");
    let public = keys.join("drover.pub");
    let pub_text = std::fs::read_to_string(&public).unwrap();
    assert_eq!(pub_text.len(), 65);
    assert!(pub_text[..64].bytes().all(|b| b.is_ascii_hexdigit()) && pub_text.ends_with('\n'));
    assert!(out.contains(pub_text.trim()), "{out}");
    let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let e = fails(&["key", "generate", "--out", s(&keys)]);
    assert!(e.contains("drover.key already exists"), "{e}");
    assert_eq!(std::fs::read_to_string(&public).unwrap(), pub_text);

    // Sources.
    let raw = dir.join("esp.img");
    let raw_bytes = patterned(200_000);
    std::fs::write(&raw, &raw_bytes).unwrap();
    let tree = dir.join("root");
    make_tree(&tree);
    let tgz = dir.join("root.tar.gz");
    make_tar_gz(&tgz);
    let mbr = dir.join("gptmbr.bin");
    std::fs::write(&mbr, [0xeb; 440]).unwrap();

    let esp = format!(
        "label=ESP,type=esp,size=1M,fs=vfat,content=raw:{},attributes=legacy-bios-bootable",
        s(&raw)
    );
    let root = format!(
        "label=drover-root,type=linux,size=rest,fs=ext4,content=dir:{}",
        s(&tree)
    );
    let base = |version: &'static str| {
        vec![
            "image".to_owned(),
            "import".into(),
            "--store".into(),
            s(&store).into(),
            "--name".into(),
            "demo".into(),
            "--version".into(),
            version.into(),
            "--key".into(),
            s(&secret).into(),
        ]
    };
    let mut args = base("1.9");
    args.extend(
        [
            "--chunk-size",
            "64K",
            "--bios-boot-code",
            s(&mbr),
            "--partition",
            &esp,
            "--partition",
            &root,
        ]
        .map(String::from),
    );
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = ok(&argv);
    for want in [
        "imported demo@1.9 into ",
        "partition 1 (ESP): type esp, size 1M, fs vfat, attributes legacy-bios-bootable",
        "partition 2 (drover-root): type linux, size rest, fs ext4",
        "chunks: 6 of at most 64.0 KiB",
        "payload: ",
        "compression: ",
        "ratio ",
        "time: built in ",
        " MB/s), verified in ",
        "sha256 ",
    ] {
        assert!(out.contains(want), "{want:?} in:\n{out}");
    }
    // Versions are immutable; a failed import leaves nothing behind.
    let e = fails(&argv);
    assert!(e.contains("demo@1.9 already exists"), "{e}");
    let mut bad = base("1.10");
    bad.extend([
        "--partition".into(),
        format!("size=1M,fs=ext4,content=tar:{}", s(&raw)),
    ]);
    let e = fails(&bad.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(e.contains("is not a tar archive"), "{e}");
    let e = fails(&[
        "image",
        "import",
        "--store",
        s(&store),
        "--name",
        "demo",
        "--version",
        "x",
        "--key",
        s(&secret),
        "--partition",
        "size=12X",
    ]);
    assert!(
        e.contains("--partition 1 (\"size=12X\"): key `size`: \"12X\": unknown suffix"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_dir(store.join(".staging")).unwrap().count(),
        0
    );

    let mut args = base("1.10");
    args.extend([
        "--partition".into(),
        format!("label=root,size=rest,fs=ext4,content=tar:{}", s(&tgz)),
    ]);
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());

    // list / show / verify.
    let list = ok(&["image", "list", "--store", s(&store)]);
    let rows: Vec<&str> = list.lines().collect();
    assert_eq!(rows.len(), 3, "{list}");
    assert!(rows[0].starts_with("NAME  VERSION  PAYLOAD"), "{list}");
    assert!(rows[1].starts_with("demo  1.9 "), "{list}");
    assert!(
        rows[2].starts_with("demo  1.10") && rows[2].ends_with("latest"),
        "{list}"
    );

    let show = ok(&["image", "show", "--store", s(&store), "demo"]);
    assert!(show.starts_with("image demo@1.10 in "), "{show}");
    let show = ok(&["image", "show", "--store", s(&store), "demo@1.9"]);
    for want in [
        "image demo@1.9 in ",
        " in 6 chunks of 64.0 KiB, sha256 ",
        "boot: uefi, bios (440 bytes of MBR boot code)",
        "content: raw 195.3 KiB",
        "in chunks 0-3 (4)",
        "content: tar ",
        "in chunks 4-5 (2), 7 entries, ",
    ] {
        assert!(show.contains(want), "{want:?} in:\n{show}");
    }
    let e = fails(&["image", "show", "--store", s(&store), "demo@2"]);
    assert!(
        e.contains("image \"demo\" has no version \"2\"; it has: 1.9, 1.10"),
        "{e}"
    );

    let out = ok(&[
        "image",
        "verify",
        "--store",
        s(&store),
        "--key",
        s(&public),
        "demo@1.9",
    ]);
    assert!(out.starts_with("demo@1.9: OK: signed by "), "{out}");
    ok(&[
        "image",
        "verify",
        "--store",
        s(&store),
        "--key",
        s(&public),
        "demo",
    ]);
    let other_keys = dir.join("other");
    ok(&["key", "generate", "--out", s(&other_keys)]);
    let e = fails(&[
        "image",
        "verify",
        "--store",
        s(&store),
        "--key",
        s(&other_keys.join("drover.pub")),
        "demo",
    ]);
    assert!(
        e.contains("demo@1.10 (")
            && e.contains("bad signature: manifest.sig does not match the trusted key"),
        "{e}"
    );

    // What the directory became, read back through the agent's pipeline.
    let image = store.join("demo/1.9");
    let entries = tar_entries(&image, 1);
    let paths: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        paths,
        [
            "./",
            "etc/",
            "etc/hostname",
            "etc/localtime",
            "etc/nested/",
            "etc/nested/deeper/",
            "etc/nested/deeper/data"
        ]
    );
    assert_eq!(entries[2].3, b"node-1\n");
    assert_eq!(entries[3].1, tar::EntryType::Symlink);
    assert_eq!(entries[3].2.as_deref(), Some("../usr/share/zoneinfo/UTC"));
    assert_eq!(entries[6].3, patterned(70_000));
    let tgz_entries = tar_entries(&store.join("demo/1.10"), 0);
    assert_eq!(tgz_entries[0].0, "etc/motd");
    assert_eq!(tgz_entries[0].3, b"hello\n");

    // One flipped payload byte: verify names the chunk.
    let manifest_bytes = std::fs::read(image.join("manifest.json")).unwrap();
    let manifest = Manifest::parse(&manifest_bytes).unwrap();
    let chunk = &manifest.chunks[2];
    let payload_path = image.join("payload");
    let good = std::fs::read(&payload_path).unwrap();
    let mut tampered = good.clone();
    tampered[(chunk.offset + chunk.length / 2) as usize] ^= 0x01;
    std::fs::write(&payload_path, &tampered).unwrap();
    let e = fails(&[
        "image",
        "verify",
        "--store",
        s(&store),
        "--key",
        s(&public),
        "demo@1.9",
    ]);
    assert!(e.contains("damaged at chunk 2 of 6 (payload bytes "), "{e}");
    assert!(e.contains("partition 1 (ESP)"), "{e}");
    assert!(e.contains(": chunk 2: SHA-256 is "), "{e}");
    std::fs::write(&payload_path, &good).unwrap();
    ok(&[
        "image",
        "verify",
        "--store",
        s(&store),
        "--key",
        s(&public),
        "demo@1.9",
    ]);

    // Serve the store.
    std::fs::write(dir.join("vmlinuz"), b"kernel").unwrap();
    std::fs::write(dir.join("initrd.img"), b"initrd").unwrap();
    let config = dir.join("server.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\npublic_url = \"http://127.0.0.1:1\"\nkernel = \"vmlinuz\"\ninitrd = \"initrd.img\"\nstore = \"store\"\n[deploy]\nimage = \"demo\"\n",
    )
    .unwrap();
    let server = serve(&config);
    let client = Client::new(format!("http://{}", server.addr).parse().unwrap());

    let got = client
        .get("/images/demo/1.9/manifest.json", 1 << 20)
        .unwrap();
    assert_eq!(got, manifest_bytes);
    let sig = client.get("/images/demo/1.9/manifest.sig", 1024).unwrap();
    assert_eq!(sig, std::fs::read(image.join("manifest.sig")).unwrap());
    for c in [
        &manifest.chunks[0],
        &manifest.chunks[3],
        manifest.chunks.last().unwrap(),
    ] {
        let bytes = client
            .get_range("/images/demo/1.9/payload", c.offset, c.length as usize)
            .unwrap();
        assert_eq!(
            bytes,
            good[c.offset as usize..(c.offset + c.length) as usize]
        );
    }
    let latest = client.get("/images/demo/latest", 1024).unwrap();
    assert_eq!(latest, b"1.10\n");

    // By hand: suffix range, HEAD, 416, 400, 404.
    let req = |line: &str, extra: &str| {
        format!("{line} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n")
    };
    let (status, headers, body) = raw_request(
        server.addr,
        &req("GET /images/demo/1.9/payload", "Range: bytes=-100\r\n"),
    );
    assert!(status.starts_with("HTTP/1.1 206"), "{status}");
    assert_eq!(body, good[good.len() - 100..]);
    let want = format!(
        "bytes {}-{}/{}",
        good.len() - 100,
        good.len() - 1,
        good.len()
    );
    assert_eq!(header(&headers, "content-range"), Some(want.as_str()));
    assert_eq!(header(&headers, "content-length"), Some("100"));

    let (status, headers, body) =
        raw_request(server.addr, &req("HEAD /images/demo/1.9/payload", ""));
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let len = good.len().to_string();
    assert_eq!(header(&headers, "content-length"), Some(len.as_str()));
    assert!(body.is_empty());

    let (status, headers, _) = raw_request(
        server.addr,
        &req(
            "GET /images/demo/1.9/payload",
            &format!("Range: bytes={}-\r\n", good.len()),
        ),
    );
    assert!(status.starts_with("HTTP/1.1 416"), "{status}");
    let want = format!("bytes */{}", good.len());
    assert_eq!(header(&headers, "content-range"), Some(want.as_str()));

    let (status, _, body) = raw_request(server.addr, &req("GET /images/../1.9/payload", ""));
    assert!(status.starts_with("HTTP/1.1 400"), "{status}");
    assert!(
        String::from_utf8_lossy(&body).contains("image name \"..\" is not"),
        "{body:?}"
    );
    let (status, _, body) = raw_request(server.addr, &req("GET /images/demo/7/payload", ""));
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    assert_eq!(
        body,
        b"image \"demo\" has no version \"7\"; it has: 1.9, 1.10\n"
    );
    drop(server);
}

#[test]
fn help_documents_the_partition_syntax() {
    // argh prints --help on stdout and exits 0.
    let out = ok(&["image", "import", "--help"]);
    for want in [
        "--partition",
        "size=SIZE",
        "content=SOURCE",
        "raw:FILE",
        "tar:FILE",
        "dir:DIR",
        "attributes=A[+A]",
        "--bios-boot-code",
    ] {
        assert!(out.contains(want), "{want:?} in:\n{out}");
    }
}
