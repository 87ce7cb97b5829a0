//! Self-tests of the harness pieces that need root but no VM: namespace,
//! taps, dnsmasq, drover-server. Quick (seconds), so a broken plumbing
//! shows up here rather than as a two-minute boot timeout.
//!
//! Like the boot tests they fail without root/dnsmasq unless
//! `DROVER_SKIP_QEMU_TESTS=1`.

use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Result};
use drover_qemu_tests::dnsmasq::{Dnsmasq, DnsmasqOptions, IPXE_SCRIPT};
use drover_qemu_tests::netns::{self, Netns, Subnet};
use drover_qemu_tests::server::{Server, ServerConfig};
use drover_qemu_tests::{artifacts, wait_until, Need, TestEnv};

#[test]
fn netns_bridge_tap_and_cleanup() -> Result<()> {
    let Some(env) = TestEnv::start("netns_bridge_tap_and_cleanup", &[Need::Netboot])? else {
        return Ok(());
    };
    let ns = Netns::create("drover-qt", Subnet::default())?;
    let name = ns.name().to_owned();
    ensure!(name.starts_with(&format!("drover-qt-{}-", std::process::id())));
    ensure!(netns::exists(&name));
    ns.add_tap("tap0")?;
    let links = ns.ip(&["-o", "link", "show"])?;
    ensure!(
        links.contains("tap0") && links.contains("master br0"),
        "{links}"
    );
    let addrs = ns.ip(&["-o", "addr", "show", "dev", "br0"])?;
    ensure!(addrs.contains("inet 10.77.0.1/24"), "{addrs}");

    // The bridge address exists only inside: a listener there is reachable
    // from a thread in the namespace.
    let listener = ns.run_in(|| TcpListener::bind("10.77.0.1:0"))??;
    let addr: SocketAddr = listener.local_addr()?;
    let accept = std::thread::spawn(move || listener.accept().map(|_| ()));
    ns.run_in(move || std::net::TcpStream::connect(addr))??;
    accept.join().expect("accept thread")?;

    // A process started in the namespace outside the registry is killed
    // with the namespace.
    let mut stray = ns.exec(Command::new("sleep").arg("600")).spawn()?;
    ensure!(wait_until(
        Duration::from_secs(5),
        Duration::from_millis(20),
        || { ns.pids().contains(&stray.id()) }
    ));
    drop(ns);
    ensure!(!netns::exists(&name), "namespace {name} still exists");
    let status = stray.wait()?;
    ensure!(!status.success(), "stray process exited with {status}");
    env.assert_clean(&[&name])
}

#[test]
fn dnsmasq_and_server_start_and_stop() -> Result<()> {
    let Some(env) = TestEnv::start("dnsmasq_and_server_start_and_stop", &[Need::Netboot])? else {
        return Ok(());
    };
    let bin = artifacts::server_bin()?;
    let ns = Netns::create("drover-qt", Subnet::default())?;
    let files = env.dir().join("files");
    std::fs::create_dir_all(&files)?;
    std::fs::write(files.join("vmlinuz"), b"kernel")?;
    std::fs::write(files.join("initrd.img"), b"initrd")?;
    let config = ServerConfig::new(&ns, &files.join("vmlinuz"), &files.join("initrd.img"))
        .deploy("on_error", "poweroff");
    let server = Server::start(env.procs(), &ns, &bin, config.clone())?;

    let (status, body) = ns.http_get(config.listen, "/healthz")?;
    ensure!(status == 200 && body == "ok\n", "{status} {body:?}");
    let (status, body) = ns.http_get(config.listen, "/boot/52%3A54%3A00%3A12%3A34%3A01.ipxe")?;
    ensure!(status == 200, "{status} {body}");
    ensure!(
        body.contains("echo drover: deploying 52:54:00:12:34:01 (image demo)"),
        "{body}"
    );
    ensure!(
        body.contains(
            "deploy.server=http://10.77.0.1:8080 deploy.image=demo deploy.on-error=poweroff"
        ),
        "{body}"
    );
    let (status, body) = ns.http_get(config.listen, "/boot/zz.ipxe")?;
    ensure!(
        status == 400 && body.contains("bad MAC address"),
        "{status} {body}"
    );
    server.wait_for_log("GET /boot/zz.ipxe -> 400", Duration::from_secs(5))?;

    let dnsmasq = Dnsmasq::start(
        env.procs(),
        &ns,
        &DnsmasqOptions::chain_to(config.chain_url()),
    )?;
    let script = std::fs::read_to_string(env.dir().join("dnsmasq/tftp").join(IPXE_SCRIPT))?;
    ensure!(
        script == "#!ipxe\nchain http://10.77.0.1:8080/boot/${net0/mac}.ipxe\n",
        "{script:?}"
    );
    ensure!(dnsmasq
        .log()
        .contains("DHCP, IP range 10.77.0.100 -- 10.77.0.200"));

    let name = ns.name().to_owned();
    drop(dnsmasq);
    drop(server);
    drop(ns);
    env.assert_clean(&[&name])
}

#[test]
fn bad_server_config_is_reported() -> Result<()> {
    let Some(env) = TestEnv::start("bad_server_config_is_reported", &[Need::Netboot])? else {
        return Ok(());
    };
    let bin = artifacts::server_bin()?;
    let ns = Netns::create("drover-qt", Subnet::default())?;
    let missing = env.dir().join("missing");
    let config = ServerConfig::new(&ns, &missing.join("vmlinuz"), &missing.join("initrd.img"));
    let Err(e) = Server::start(env.procs(), &ns, &bin, config) else {
        anyhow::bail!("the server started without its kernel");
    };
    let e = format!("{e:#}");
    ensure!(e.contains("server.toml: key `kernel`: "), "{e}");
    let name = ns.name().to_owned();
    drop(ns);
    env.assert_clean(&[&name])
}
