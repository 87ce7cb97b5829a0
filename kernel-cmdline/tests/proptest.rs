//! Properties: valid options survive render → parse; anything that parses
//! survives parse → render → parse; nothing panics on any input.

use std::net::{Ipv4Addr, Ipv6Addr};

use kernel_cmdline::*;
use proptest::prelude::*;
use proptest::sample::select;

/// `[A-Za-z0-9._-]+`, not `.` or `..`.
fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._-]{1,12}".prop_filter("not . or ..", |s| s != "." && s != "..")
}

fn image() -> impl Strategy<Value = ImageRef> {
    (name(), proptest::option::of(name())).prop_map(|(name, version)| ImageRef { name, version })
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<Ipv4Addr>().prop_map(|a| a.to_string()),
        any::<Ipv6Addr>().prop_map(|a| a.to_string()),
        "[A-Za-z0-9]([A-Za-z0-9_-]{0,8}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9_-]{0,8}[A-Za-z0-9])?){0,3}"
            // all digits and dots reads as an IPv4 address
            .prop_filter("not numeric", |h| !h.bytes().all(|b| b.is_ascii_digit() || b == b'.')),
    ]
}

fn server() -> impl Strategy<Value = ServerUrl> {
    let path = "(/([A-Za-z0-9._~!$&'()*+;=:@-]|%[0-9a-fA-F]{2}){1,6}){0,3}";
    (host(), prop_oneof![Just(80u16), 1u16..], path).prop_map(|(host, port, path)| ServerUrl {
        host,
        port,
        path,
    })
}

fn disk() -> impl Strategy<Value = DiskSelector> {
    prop_oneof![
        Just(DiskSelector::Auto),
        "/dev/[A-Za-z0-9._/+:-]{1,20}"
            .prop_filter("no ..", |p| !p.split('/').any(|c| c == ".."))
            .prop_map(DiskSelector::Path),
        "[!#-.0-~]{1,20}"
            .prop_filter("not . or ..", |s| s != "." && s != "..")
            .prop_map(DiskSelector::ById),
        "[!#-~]([ !#-~]{0,18}[!#-~])?".prop_map(DiskSelector::Serial),
        "[!#-~]{1,20}".prop_map(DiskSelector::Wwn),
    ]
}

fn static_ip() -> impl Strategy<Value = StaticIp> {
    let client = any::<Ipv4Addr>().prop_filter("unicast", |a| {
        !(a.is_unspecified() || a.is_broadcast() || a.is_multicast())
    });
    let netmask = (1u32..=32).prop_map(|p| Ipv4Addr::from(u32::MAX << (32 - p)));
    let device = "[!#-.0-9;-~]{1,15}".prop_filter("not . or ..", |s| s != "." && s != "..");
    (
        client,
        proptest::option::of(any::<Ipv4Addr>()),
        proptest::option::of(any::<Ipv4Addr>()),
        netmask,
        proptest::option::of("[A-Za-z0-9.-]{1,64}"),
        proptest::option::of(device),
        proptest::collection::vec(any::<Ipv4Addr>(), 0..=2),
    )
        .prop_map(
            |(client, server, gateway, netmask, hostname, device, dns)| StaticIp {
                client,
                server,
                gateway,
                netmask,
                hostname,
                device,
                dns,
            },
        )
}

fn ip() -> impl Strategy<Value = IpConfig> {
    prop_oneof![
        Just(IpConfig::Dhcp),
        Just(IpConfig::Off),
        static_ip().prop_map(IpConfig::Static),
    ]
}

/// Any valid `Options`.
fn options() -> impl Strategy<Value = Options> {
    let transfer = (
        proptest::collection::vec(server(), 1..4),
        image(),
        select(vec![Mode::Http, Mode::Chain, Mode::Torrent]),
        disk(),
        any::<bool>(),
        select(vec![
            AfterSuccess::Reboot,
            AfterSuccess::Poweroff,
            AfterSuccess::None,
        ]),
        select(vec![OnError::Reboot, OnError::Poweroff, OnError::Halt]),
    );
    let rest = (
        proptest::option::of("[A-Za-z0-9._~+/=-]{1,40}|[A-Za-z0-9._~+/=-]{256}"),
        proptest::option::of(any::<[u8; 32]>().prop_map(PublicKey)),
        any::<bool>(),
        select(vec![LogLevel::Info, LogLevel::Debug]),
        proptest::option::of(any::<[u8; 6]>().prop_map(MacAddr)),
        ip(),
    );
    (transfer, rest).prop_map(
        |(
            (servers, image, mode, disk, wipe, reboot, on_error),
            (token, key, insecure, log, bootif, ip),
        )| Options {
            servers,
            image,
            mode,
            disk,
            wipe,
            reboot,
            on_error,
            token,
            key,
            insecure,
            log,
            bootif,
            ip,
        },
    )
}

/// One word of a plausible, messy command line: valid options in odd
/// spellings, near misses, quoting, kernel words.
fn messy_word() -> impl Strategy<Value = String> {
    prop_oneof![
        options().prop_map(|o| render(&o)),
        select(vec![
            "vmlinuz",
            "quiet",
            "console=ttyS0,115200n8",
            "root=/dev/nfs",
            "--",
            "deploy.wipe",
            "deploy.wipe=ON",
            "deploy.insecure=0",
            "deploy.reboot=reboot",
            "deploy.reboot=off",
            "deploy.mode=CHAIN",
            "deploy.mode=chian",
            "deploy.on_error=poweroff",
            "deploy.on-error=x",
            "\"deploy.disk=serial:A B\"",
            "deploy.disk=\"serial:A B\"",
            "deploy.disk=/dev/sda",
            "deploy.disk=/dev/../sda",
            "deploy.server=http://a/,HTTP://B:80//x/",
            "deploy.server=https://a",
            "deploy.image=x@1",
            "deploy.image=..",
            "BOOTIF=01-AA-BB-CC-DD-EE-FF",
            "ip=any",
            "ip=none",
            "ip=10.0.0.5:::255.255.255.0",
            "ip=10.0.0.5:::255.255.255.0:::off::1.1.1.1",
            "ip=10.0.0.5:::255.255.255.0:::dhcp",
            "\"",
            "k=\"a b",
        ])
        .prop_map(str::to_owned),
        "[a-z.=\"]{1,8}",
    ]
}

fn messy_line() -> impl Strategy<Value = String> {
    (
        proptest::collection::vec(messy_word(), 0..8),
        proptest::collection::vec(select(vec![" ", "  ", "\t", "\n"]), 8),
    )
        .prop_map(|(words, seps)| {
            let mut line = String::new();
            for (w, sep) in words.iter().zip(seps.iter().cycle()) {
                line.push_str(w);
                line.push_str(sep);
            }
            line
        })
}

/// Text heavy in the characters the tokenizer and parsers care about.
fn hostile() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            select(vec![
                "deploy.",
                "deploy.server=",
                "deploy.image=",
                "deploy.disk=",
                "ip=",
                "BOOTIF=",
                "http://",
                "[",
                "]",
                ":",
                "@",
                ",",
                "/",
                "..",
                "%",
                "01-",
                "\"",
                "=",
                " ",
                "\t",
                "\0",
                "\u{a0}",
                "Р",
                "é",
                "\u{1b}",
                "_",
                "-",
            ])
            .prop_map(str::to_owned),
            any::<char>().prop_map(String::from),
            "[a-f0-9]{1,4}",
        ],
        0..40,
    )
    .prop_map(|parts| parts.concat())
}

fn one_line(e: &Error) -> bool {
    let msg = e.to_string();
    !msg.contains('\n') && !msg.contains('\r') && !msg.contains('\u{1b}')
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn render_then_parse_is_identity(o in options()) {
        let line = render(&o);
        prop_assert_eq!(parse(&line), Ok(o), "{}", line);
    }

    #[test]
    fn parse_render_parse_is_stable(line in messy_line()) {
        if let Ok(o) = parse(&line) {
            let again = render(&o);
            prop_assert_eq!(parse(&again), Ok(o), "{} -> {}", line, again);
        }
    }

    #[test]
    fn value_types_round_trip(o in options()) {
        for s in &o.servers {
            prop_assert_eq!(&s.to_string().parse::<ServerUrl>().unwrap(), s);
        }
        prop_assert_eq!(o.image.to_string().parse::<ImageRef>(), Ok(o.image.clone()));
        prop_assert_eq!(o.disk.to_string().parse::<DiskSelector>(), Ok(o.disk.clone()));
        prop_assert_eq!(o.ip.to_string().parse::<IpConfig>(), Ok(o.ip.clone()));
        if let Some(k) = o.key {
            prop_assert_eq!(k.to_string().parse::<PublicKey>(), Ok(k));
        }
        if let Some(m) = o.bootif {
            prop_assert_eq!(m.to_string().parse::<MacAddr>(), Ok(m));
            prop_assert_eq!(MacAddr::from_bootif(&m.to_bootif()), Ok(m));
        }
    }

    #[test]
    fn never_panics_on_any_string(line in any::<String>()) {
        let _ = split(&line);
        let _ = on_error_hint(&line);
        if let Err(e) = parse(&line) {
            prop_assert!(one_line(&e), "{:?}", e.to_string());
        }
    }

    #[test]
    fn never_panics_on_hostile_text(line in hostile()) {
        let _ = split(&line);
        let _ = on_error_hint(&line);
        match parse(&line) {
            Ok(o) => prop_assert_eq!(parse(&render(&o)), Ok(o)),
            Err(e) => prop_assert!(one_line(&e), "{:?}", e.to_string()),
        }
        // The value parsers alone, on the raw text.
        let _ = line.parse::<ServerUrl>();
        let _ = line.parse::<DiskSelector>();
        let _ = line.parse::<IpConfig>();
        let _ = line.parse::<PublicKey>();
        let _ = MacAddr::from_bootif(&line);
    }

    #[test]
    fn split_never_loses_unquoted_words(words in proptest::collection::vec("[a-z]{1,5}(=[a-z0-9]{0,5})?", 0..6)) {
        let got = split(&words.join(" "));
        prop_assert_eq!(got.len(), words.len());
    }
}
