//! Hostile archives: a table of crafted attacks, and a property test that
//! whatever the archive, nothing changes outside the destination.

use proptest::prelude::*;

use super::*;

/// (archive, entry named in the error, rule fragment).
fn hostile(out: &str) -> Vec<(Vec<E>, &'static str, &'static str)> {
    let f = |p: &str| E::File(p.to_string(), 0o644, b"pwned");
    let s = |p: &str, t: &str| E::Sym(p.to_string(), t.to_string());
    let h = |p: &str, t: &str| E::Hard(p.to_string(), t.to_string());
    vec![
        (vec![f("../x")], "../x", "the path has a `..` component"),
        (vec![f("/etc/x")], "/etc/x", "the path is absolute"),
        (vec![f("a/../../x")], "a/../../x", "`..` component"),
        (
            vec![E::Dir("a/", 0o755), f("a/..")],
            "a/..",
            "`..` component",
        ),
        (
            vec![s("a", "../../.."), f("a/x")],
            "a",
            "the symlink target escapes the root",
        ),
        (
            vec![s("d/l", "../..")],
            "d/l",
            "the symlink target escapes the root",
        ),
        (vec![s("d/l", "x/../../..")], "d/l", "escapes the root"),
        (
            vec![s("a", out), f("a/x")],
            "a/x",
            "the path goes through the symlink \"a\"",
        ),
        (
            vec![s("a", out), E::Dir("a/d/", 0o755)],
            "a/d/",
            "through the symlink \"a\"",
        ),
        (
            vec![s("a", "."), f("a/x")],
            "a/x",
            "through the symlink \"a\"",
        ),
        (
            vec![h("shadow", "/etc/shadow")],
            "shadow",
            "the hardlink target is absolute",
        ),
        (
            vec![h("h", "../outside/secret")],
            "h",
            "the hardlink target has a `..` component",
        ),
        (
            vec![h("h", "missing")],
            "h",
            "the hardlink target does not exist",
        ),
        (
            vec![s("a", out), h("h", "a/secret")],
            "h",
            "through the symlink \"a\"",
        ),
        (
            vec![E::Dir("d/", 0o755), h("h", "d")],
            "h",
            "the hardlink target is a directory",
        ),
        (vec![f("x"), h("x", "x")], "x", "points to itself"),
        (
            vec![E::Dir("d/", 0o755), f("d")],
            "d",
            "it would replace a directory",
        ),
        (vec![f("x"), f("x/y")], "x/y", "\"x\" is not a directory"),
        (vec![E::Node("", EntryType::Fifo, 0, 0)], "", "empty path"),
        (
            vec![E::LongName(format!("{}../../x", "a/".repeat(60)), b"x")],
            "a/a/",
            "`..` component",
        ),
        (
            vec![E::Pax(vec![("path", b"../evil".to_vec())], "ok", b"x")],
            "../evil",
            "`..` component",
        ),
        (vec![s("l", "")], "l", "the symlink target is empty"),
    ]
}

#[test]
fn hostile_archives_are_refused() {
    let probe = Sandbox::new();
    for (entries, path, rule) in hostile(&probe.outside()) {
        let sb = Sandbox::new();
        let outside = sb.outside();
        let entries: Vec<E> = entries
            .into_iter()
            .map(|e| match e {
                E::Sym(p, t) if t == probe.outside() => E::Sym(p, outside.clone()),
                e => e,
            })
            .collect();
        let err = sb
            .run(&entries)
            .expect_err(&format!("{entries:?} must fail"));
        let rejected = err
            .downcast_ref::<Rejected>()
            .unwrap_or_else(|| panic!("{entries:?}: not a rule violation: {err:#}"));
        assert!(rejected.path.starts_with(path), "{entries:?}: {err}");
        assert!(rejected.rule.contains(rule), "{entries:?}: {err}");
        assert!(
            err.to_string().starts_with("refusing tar entry \""),
            "{err}"
        );
        sb.assert_outside_untouched();
    }
}

fn arb_path() -> impl Strategy<Value = String> {
    let comp = prop_oneof!["a", "b", "..", ".", "", "c"];
    prop::collection::vec(comp, 1..4).prop_map(|c| c.join("/"))
}

fn arb_entry(outside: String) -> impl Strategy<Value = E> {
    prop_oneof![
        arb_path().prop_map(|p| E::File(p, 0o644, b"data")),
        (arb_path(), arb_path()).prop_map(|(p, t)| E::Sym(p, t)),
        (arb_path(), Just(outside.clone())).prop_map(|(p, t)| E::Sym(p, t)),
        arb_path().prop_map(move |p| E::Sym(p, "/".into())),
        (arb_path(), arb_path()).prop_map(|(p, t)| E::Hard(p, t)),
        Just(E::Dir("a/", 0o755)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn nothing_escapes(seq in prop::collection::vec(arb_entry("@OUT@".into()), 1..8)) {
        let sb = Sandbox::new();
        let out = sb.outside();
        let seq: Vec<E> = seq
            .into_iter()
            .map(|e| match e {
                E::Sym(p, t) => E::Sym(p, t.replace("@OUT@", &out)),
                e => e,
            })
            .collect();
        let _ = sb.run(&seq);
        sb.assert_outside_untouched();
    }
}
