//! Table-driven tests of `parse`, `render`, `on_error_hint` and `summary`
//! through the public API only, as the agent and server use it.

use std::net::Ipv4Addr;

use kernel_cmdline::*;

const BASE: &str = "deploy.server=http://10.0.0.1 deploy.image=debian";

fn base() -> Options {
    Options {
        servers: vec![ServerUrl {
            host: "10.0.0.1".into(),
            port: 80,
            path: String::new(),
        }],
        image: ImageRef {
            name: "debian".into(),
            version: None,
        },
        mode: Mode::Http,
        disk: DiskSelector::Auto,
        wipe: false,
        reboot: AfterSuccess::Reboot,
        on_error: OnError::Halt,
        token: None,
        key: None,
        insecure: false,
        log: LogLevel::Info,
        bootif: None,
        ip: IpConfig::Dhcp,
    }
}

/// `BASE` plus `extra` parses to `base()` changed by `f`.
fn check(extra: &str, f: impl FnOnce(&mut Options)) {
    let line = format!("{BASE} {extra}");
    let mut want = base();
    f(&mut want);
    match parse(&line) {
        Ok(got) => assert_eq!(got, want, "{line}"),
        Err(e) => panic!("{line}: {e}"),
    }
}

#[test]
fn minimal_line_gets_defaults() {
    assert_eq!(parse(BASE), Ok(base()));
    assert_eq!(BASE.parse::<Options>(), Ok(base()));
}

#[test]
fn every_option() {
    let line = "BOOT_IMAGE=/vmlinuz quiet console=ttyS0,115200n8 \
        deploy.server=http://boot.lab:8080/drover/,http://[fd00::1] \
        deploy.image=debian@12.5 deploy.mode=torrent deploy.disk=/dev/nvme0n1 \
        deploy.wipe=yes deploy.reboot=poweroff deploy.on-error=reboot \
        deploy.token=aGVsbG8= \
        deploy.key=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff \
        deploy.insecure=0 deploy.log=debug BOOTIF=01-52-54-00-12-34-56 \
        ip=10.0.0.5:10.0.0.1:10.0.0.254:255.255.255.0:node1:eth0:off:10.0.0.2\n";
    let o = parse(line).unwrap();
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = [
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ][i % 16];
    }
    let want = Options {
        servers: vec![
            ServerUrl {
                host: "boot.lab".into(),
                port: 8080,
                path: "/drover".into(),
            },
            ServerUrl {
                host: "fd00::1".into(),
                port: 80,
                path: String::new(),
            },
        ],
        image: ImageRef {
            name: "debian".into(),
            version: Some("12.5".into()),
        },
        mode: Mode::Torrent,
        disk: DiskSelector::Path("/dev/nvme0n1".into()),
        wipe: true,
        reboot: AfterSuccess::Poweroff,
        on_error: OnError::Reboot,
        token: Some("aGVsbG8=".into()),
        key: Some(PublicKey(key)),
        insecure: false,
        log: LogLevel::Debug,
        bootif: Some(MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56])),
        ip: IpConfig::Static(StaticIp {
            client: Ipv4Addr::new(10, 0, 0, 5),
            server: Some(Ipv4Addr::new(10, 0, 0, 1)),
            gateway: Some(Ipv4Addr::new(10, 0, 0, 254)),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            hostname: Some("node1".into()),
            device: Some("eth0".into()),
            dns: vec![Ipv4Addr::new(10, 0, 0, 2)],
        }),
    };
    assert_eq!(o, want);
    assert_eq!(
        render(&o),
        "deploy.server=http://boot.lab:8080/drover,http://[fd00::1] deploy.image=debian@12.5 \
         deploy.mode=torrent deploy.disk=/dev/nvme0n1 deploy.wipe=yes deploy.reboot=poweroff \
         deploy.on-error=reboot deploy.token=aGVsbG8= \
         deploy.key=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff \
         deploy.log=debug BOOTIF=01-52-54-00-12-34-56 \
         ip=10.0.0.5:10.0.0.1:10.0.0.254:255.255.255.0:node1:eth0:off:10.0.0.2"
    );
    assert_eq!(parse(&render(&o)), Ok(o));
}

#[test]
fn valid_table() {
    type Edit = fn(&mut Options);
    #[rustfmt::skip]
    let cases: &[(&str, Edit)] = &[
        ("", |_| {}),
        // kernel words and a leading bare image name are ignored
        ("vmlinuz", |_| {}),
        (r"\EFI\drover\vmlinuz.efi initrd=\EFI\drover\initrd.img", |_| {}),
        ("quiet -- single root=/dev/nfs deployx=1 Deploy.mode=x ip6=x bootif=zz", |_| {}),
        // booleans
        ("deploy.wipe", |o| o.wipe = true),
        ("deploy.wipe=1", |o| o.wipe = true),
        ("deploy.wipe=TRUE", |o| o.wipe = true),
        ("deploy.wipe=On", |o| o.wipe = true),
        ("deploy.wipe deploy.wipe=no", |_| {}),
        ("deploy.wipe=off deploy.wipe", |o| o.wipe = true),
        ("deploy.insecure", |o| o.insecure = true),
        ("deploy.insecure=false", |_| {}),
        // last wins, and an overridden bad value is not an error
        ("deploy.mode=torrent deploy.mode=chain", |o| o.mode = Mode::Chain),
        ("deploy.mode=bogus deploy.mode=chain", |o| o.mode = Mode::Chain),
        ("deploy.image=other@2", |o| o.image = ImageRef { name: "other".into(), version: Some("2".into()) }),
        // keywords are case-insensitive
        ("deploy.mode=CHAIN deploy.log=Debug", |o| { o.mode = Mode::Chain; o.log = LogLevel::Debug }),
        // `_` is `-` in keys, as for kernel parameters
        ("deploy.on_error=poweroff", |o| o.on_error = OnError::Poweroff),
        // reboot spellings
        ("deploy.reboot=reboot", |_| {}),
        ("deploy.reboot=yes", |_| {}),
        ("deploy.reboot=no", |o| o.reboot = AfterSuccess::None),
        ("deploy.reboot=0", |o| o.reboot = AfterSuccess::None),
        ("deploy.reboot=off", |o| o.reboot = AfterSuccess::None),
        ("deploy.reboot=poweroff", |o| o.reboot = AfterSuccess::Poweroff),
        ("deploy.on-error=halt", |_| {}),
        // quoting
        ("deploy.disk=\"serial:WD 123\"", |o| o.disk = DiskSelector::Serial("WD 123".into())),
        ("\"deploy.disk=serial:WD 123\"", |o| o.disk = DiskSelector::Serial("WD 123".into())),
        ("deploy.disk=\"by-id:nvme-x\"", |o| o.disk = DiskSelector::ById("nvme-x".into())),
        ("deploy.disk=/dev/disk/by-id/ata-X", |o| o.disk = DiskSelector::Path("/dev/disk/by-id/ata-X".into())),
        ("deploy.disk=wwn:0x5000c500", |o| o.disk = DiskSelector::Wwn("0x5000c500".into())),
        ("foo=\"a deploy.wipe b\"", |_| {}),
        // BOOTIF
        ("BOOTIF=01-AA-bb-CC-dd-EE-ff", |o| o.bootif = Some(MacAddr([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]))),
        // ip
        ("ip=dhcp", |_| {}),
        ("ip=any", |_| {}),
        ("ip=on", |_| {}),
        ("ip=off", |o| o.ip = IpConfig::Off),
        ("ip=none", |o| o.ip = IpConfig::Off),
        ("ip=192.168.1.9:::255.255.0.0:::none", |o| o.ip = IpConfig::Static(StaticIp {
            client: Ipv4Addr::new(192, 168, 1, 9),
            server: None,
            gateway: None,
            netmask: Ipv4Addr::new(255, 255, 0, 0),
            hostname: None,
            device: None,
            dns: vec![],
        })),
        ("ip=192.168.1.9::192.168.1.1:255.255.255.0::enp1s0:off:1.1.1.1:8.8.8.8", |o| o.ip = IpConfig::Static(StaticIp {
            client: Ipv4Addr::new(192, 168, 1, 9),
            server: None,
            gateway: Some(Ipv4Addr::new(192, 168, 1, 1)),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            hostname: None,
            device: Some("enp1s0".into()),
            dns: vec![Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(8, 8, 8, 8)],
        })),
        ("ip=192.168.1.9:::255.255.255.0 ip=dhcp", |_| {}),
        // token and key
        ("deploy.token=a.b_c~d+e/f=g-h", |o| o.token = Some("a.b_c~d+e/f=g-h".into())),
        ("deploy.key=FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF", |o| o.key = Some(PublicKey([0xff; 32]))),
        // several servers, trailing slashes, ports
        ("deploy.server=http://a:81/,http://b/x//", |o| o.servers = vec![
            ServerUrl { host: "a".into(), port: 81, path: String::new() },
            ServerUrl { host: "b".into(), port: 80, path: "/x".into() },
        ]),
    ];
    for (extra, edit) in cases {
        check(extra, edit);
    }
}

/// The exact message for a few lines, as an operator would read them.
#[test]
fn error_messages() {
    let all_keys = "deploy.server, deploy.image, deploy.mode, deploy.disk, deploy.wipe, \
        deploy.reboot, deploy.on-error, deploy.token, deploy.key, deploy.insecure, deploy.log";
    let cases: &[(&str, String)] = &[
        (
            "deploy.mode=chian",
            r#"deploy.mode: invalid value "chian"; accepted: http, chain, torrent"#.into(),
        ),
        (
            "deploy.mdoe=chain",
            format!(
                r#"unknown option deploy.mdoe="chain" (did you mean deploy.mode?); valid options: {all_keys}"#
            ),
        ),
        (
            "deploy.verbose",
            format!("unknown option deploy.verbose; valid options: {all_keys}"),
        ),
        (
            "deploy.wipe=maybe",
            r#"deploy.wipe: invalid value "maybe"; accepted: 1/0, yes/no, true/false, on/off"#.into(),
        ),
        (
            "deploy.mode",
            "deploy.mode: missing value; accepted: http, chain, torrent".into(),
        ),
        (
            "deploy.server=https://boot",
            "deploy.server: invalid value \"https://boot\" (https is not used: integrity comes \
             from signed manifests, only http is accepted); accepted: http://HOST[:PORT][/PATH][,http://…] \
             with HOST an IPv4 address, a DNS name or [IPv6]"
                .into(),
        ),
        (
            "ip=10.0.0.5:::255.255.255.0::eth0:dhcp",
            "ip: invalid value \"10.0.0.5:::255.255.255.0::eth0:dhcp\" (a static address needs \
             AUTOCONF off or none; for DHCP write ip=dhcp); accepted: dhcp (or on, any), off (or none), \
             or CLIENT:[SERVER]:[GW]:NETMASK:[HOSTNAME]:[DEVICE]:[off|none][:DNS0[:DNS1]]"
                .into(),
        ),
        (
            "BOOTIF=aa-bb-cc-dd-ee-ff",
            "BOOTIF: invalid value \"aa-bb-cc-dd-ee-ff\" (must start with the hardware type 01-); \
             accepted: 01-aa-bb-cc-dd-ee-ff (01 = Ethernet, then the MAC)"
                .into(),
        ),
    ];
    for (extra, want) in cases {
        let line = format!("{BASE} {extra}");
        assert_eq!(parse(&line).unwrap_err().to_string(), *want, "{line}");
    }

    assert_eq!(
        parse("deploy.server=http://a").unwrap_err().to_string(),
        "missing required option deploy.image (accepted: NAME[@VERSION], each made of \
         A-Z a-z 0-9 . _ - and not \".\" or \"..\")"
    );
    assert_eq!(
        parse("vmlinuz quiet").unwrap_err(),
        Error::Missing {
            key: "deploy.server",
            accepted: ServerUrl::LIST_ACCEPTED
        }
    );
}

/// Every class of error, by variant and key.
#[test]
fn error_table() {
    let cases: &[(&str, &str)] = &[
        ("deploy.image", "deploy.image"),
        ("deploy.image=", "deploy.image"),
        ("deploy.image=a/b", "deploy.image"),
        ("deploy.image=..", "deploy.image"),
        ("deploy.image=a@", "deploy.image"),
        ("deploy.server=", "deploy.server"),
        ("deploy.server=10.0.0.1", "deploy.server"),
        ("deploy.server=http://a,", "deploy.server"),
        ("deploy.server=http://a:0", "deploy.server"),
        ("deploy.disk=/etc/passwd", "deploy.disk"),
        ("deploy.disk=/dev/../x", "deploy.disk"),
        ("deploy.disk=sda", "deploy.disk"),
        ("deploy.disk", "deploy.disk"),
        ("deploy.wipe=", "deploy.wipe"),
        ("deploy.reboot=halt", "deploy.reboot"),
        ("deploy.on-error=yes", "deploy.on-error"),
        ("deploy.on_error=yes", "deploy.on_error"),
        ("deploy.token=a:b", "deploy.token"),
        ("deploy.token=", "deploy.token"),
        ("deploy.key=abc", "deploy.key"),
        ("deploy.insecure=2", "deploy.insecure"),
        ("deploy.log=trace", "deploy.log"),
        ("BOOTIF", "BOOTIF"),
        ("BOOTIF=01-aa-bb-cc-dd-ee", "BOOTIF"),
        ("ip", "ip"),
        ("ip=bootp", "ip"),
        ("ip=", "ip"),
        ("ip=10.0.0.5:::24", "ip"),
        ("ip=eth0:dhcp", "ip"),
        (
            "deploy.wipe=1 deploy.mode=chain deploy.mode=x",
            "deploy.mode",
        ),
    ];
    for (extra, key) in cases {
        let line = format!("{BASE} {extra}");
        match parse(&line) {
            Err(e @ Error::Invalid { .. }) => assert_eq!(e.key(), *key, "{line}: {e}"),
            other => panic!("{line}: {other:?}"),
        }
    }
    for extra in [
        "deploy.",
        "deploy.foo=1",
        "deploy.Mode=chain",
        "deploy.server.x=1",
    ] {
        let line = format!("{BASE} {extra}");
        assert!(
            matches!(parse(&line), Err(Error::UnknownKey { .. })),
            "{line}"
        );
    }
}

#[test]
fn error_precedence() {
    // An unknown key beats a bad value, which beats a missing key.
    let e = parse("deploy.mode=x deploy.nope=1").unwrap_err();
    assert!(matches!(e, Error::UnknownKey { .. }), "{e}");
    let e = parse("deploy.mode=x").unwrap_err();
    assert!(matches!(e, Error::Invalid { .. }), "{e}");
}

#[test]
fn on_error_hint_salvages() {
    assert_eq!(on_error_hint(""), OnError::Halt);
    assert_eq!(
        on_error_hint("deploy.on-error=poweroff deploy.bogus"),
        OnError::Poweroff
    );
    assert_eq!(
        on_error_hint("deploy.on_error=reboot deploy.mode=x"),
        OnError::Reboot
    );
    // The last *valid* value.
    assert_eq!(
        on_error_hint("deploy.on-error=reboot deploy.on-error=explode"),
        OnError::Reboot
    );
    assert_eq!(on_error_hint("deploy.on-error"), OnError::Halt);
    assert_eq!(
        on_error_hint("deploy.on-error=\"poweroff\""),
        OnError::Poweroff
    );
}

#[test]
fn render_minimal_and_quoted() {
    assert_eq!(render(&base()), BASE);
    let mut o = base();
    o.disk = DiskSelector::Serial("WD 1".into());
    o.on_error = OnError::Poweroff;
    o.reboot = AfterSuccess::None;
    o.insecure = true;
    o.ip = IpConfig::Off;
    let line = render(&o);
    assert_eq!(
        line,
        format!(
            "{BASE} deploy.disk=\"serial:WD 1\" deploy.reboot=no deploy.on-error=poweroff \
             deploy.insecure=yes ip=off"
        )
    );
    assert_eq!(parse(&line), Ok(o));
}

#[test]
fn summary_line() {
    let mut o = base();
    o.image.version = Some("12".into());
    assert_eq!(
        o.summary(),
        "image=debian@12 mode=http servers=http://10.0.0.1 disk=auto wipe=no reboot=yes \
         on-error=halt ip=dhcp"
    );
    o.token = Some("secret".into());
    o.key = Some(PublicKey([0xab; 32]));
    o.log = LogLevel::Debug;
    o.insecure = true;
    o.bootif = Some(MacAddr([1, 2, 3, 4, 5, 6]));
    let s = o.summary();
    assert!(
        s.ends_with(" log=debug insecure=yes key=abababab… token=set bootif=01:02:03:04:05:06"),
        "{s}"
    );
    assert!(!s.contains("secret"));
}
