use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

const LAX: Limits = Limits {
    max_len: 1 << 20,
    max_depth: 32,
    max_values: 100_000,
    sorted_keys: false,
};

fn strict() -> Limits {
    Limits {
        sorted_keys: true,
        ..LAX
    }
}

fn dict<'a>(entries: Vec<(&'a [u8], Value<'a>)>) -> Value<'a> {
    let mut d = Dict::new();
    for (k, v) in entries {
        d.insert(k, v);
    }
    Value::Dict(d)
}

#[test]
fn decodes_the_canonical_forms() {
    let cases: Vec<(&[u8], Value)> = vec![
        (b"i0e", Value::Int(0)),
        (b"i42e", Value::Int(42)),
        (b"i-42e", Value::Int(-42)),
        (b"i9223372036854775807e", Value::Int(i64::MAX)),
        (b"i-9223372036854775808e", Value::Int(i64::MIN)),
        (b"0:", Value::Bytes(b"")),
        (b"4:spam", Value::Bytes(b"spam")),
        (b"3:\x00\xff:", Value::Bytes(b"\x00\xff:")),
        (b"le", Value::List(vec![])),
        (
            b"l4:spami7ee",
            Value::List(vec![Value::Bytes(b"spam"), Value::Int(7)]),
        ),
        (b"de", dict(vec![])),
        (
            b"d3:cow3:moo4:spaml1:a1:bee",
            dict(vec![
                (b"cow", Value::Bytes(b"moo")),
                (
                    b"spam",
                    Value::List(vec![Value::Bytes(b"a"), Value::Bytes(b"b")]),
                ),
            ]),
        ),
        (b"d0:i1ee", dict(vec![(b"", Value::Int(1))])),
        (b"lllleeee", {
            let l = |v| Value::List(vec![v]);
            l(l(l(Value::List(vec![]))))
        }),
    ];
    for (input, want) in cases {
        let got = decode(input, &strict()).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        assert_eq!(got, want, "{}", input.escape_ascii());
        assert_eq!(
            got.to_bytes(),
            input,
            "re-encoding {}",
            input.escape_ascii()
        );
    }
}

#[test]
fn errors_name_the_offset_and_what_was_expected() {
    let cases: &[(&[u8], &str)] = &[
        (b"", "bencode at byte 0: input ends where a value ('i', a digit, 'l' or 'd') was expected"),
        (b"x", "bencode at byte 0: expected a value ('i', a digit, 'l' or 'd'), found 'x' (0x78)"),
        (b"i", "bencode at byte 1: input ends where a digit or '-' was expected"),
        (b"ie", "bencode at byte 1: expected a digit, found 'e' (0x65)"),
        (b"i-e", "bencode at byte 2: expected a digit, found 'e' (0x65)"),
        (b"i12", "bencode at byte 3: input ends where a digit or 'e' was expected"),
        (b"i1x2e", "bencode at byte 2: expected a digit or 'e', found 'x' (0x78)"),
        (b"i 1e", "bencode at byte 1: expected a digit, found ' ' (0x20)"),
        (b"i+1e", "bencode at byte 1: expected a digit, found '+' (0x2b)"),
        (b"i01e", "bencode at byte 1: number with a leading zero or \"-0\""),
        (b"i-0e", "bencode at byte 1: number with a leading zero or \"-0\""),
        (b"i9223372036854775808e", "bencode at byte 1: number too large"),
        (b"i-9223372036854775809e", "bencode at byte 1: number too large"),
        (b"5:abc", "bencode at byte 0: byte string of 5 bytes but only 3 bytes follow"),
        (b"05:abcde", "bencode at byte 0: number with a leading zero"),
        (b"3abc", "bencode at byte 1: expected a digit or ':', found 'a' (0x61)"),
        (b"99999999999999999999:", "bencode at byte 0: number too large"),
        (b"l", "bencode at byte 1: input ends where a value or 'e' was expected"),
        (b"li1e", "bencode at byte 4: input ends where a value or 'e' was expected"),
        (b"d", "bencode at byte 1: input ends where a key (a byte string) or 'e' was expected"),
        (b"di1ei2ee", "bencode at byte 1: expected a key (a byte string) or 'e', found 'i' (0x69)"),
        (b"d1:a", "bencode at byte 4: input ends where a value ('i', a digit, 'l' or 'd') was expected"),
        (b"d1:bi1e1:ai2ee", "bencode at byte 7: dictionary key \"a\" comes after \"b\"; keys must be sorted as raw bytes"),
        (b"d1:ai1e1:ai2ee", "bencode at byte 7: dictionary key \"a\" repeated"),
        (b"i1ei2e", "bencode at byte 3: 3 bytes after the value"),
        (b"lee", "bencode at byte 2: 1 byte after the value"),
    ];
    for (input, want) in cases {
        let e = decode(input, &strict()).unwrap_err().to_string();
        assert!(e.starts_with(want), "{}: {e}", input.escape_ascii());
    }
}

#[test]
fn unsorted_keys_are_accepted_when_not_required() {
    let v = decode(b"d1:bi1e1:ai2e1:ai3ee", &LAX).unwrap();
    let d = v.as_dict().unwrap();
    assert_eq!(d.get(b"a"), Some(&Value::Int(2)), "the first wins");
    assert_eq!(d.entries().len(), 3);
    assert_eq!(v.to_bytes(), b"d1:bi1e1:ai2e1:ai3ee", "order kept");
}

#[test]
fn limits() {
    let deep = |n: usize| [vec![b'l'; n], vec![b'e'; n]].concat();
    let l = Limits {
        max_depth: 3,
        ..strict()
    };
    assert!(decode(&deep(3), &l).is_ok());
    let e = decode(&deep(4), &l).unwrap_err();
    assert_eq!(
        e.to_string(),
        "bencode at byte 3: nested deeper than 3 lists/dictionaries"
    );
    // Deep nesting far past the limit costs nothing more than reaching it.
    assert!(decode(&deep(1_000_000), &l).is_err());

    let l = Limits {
        max_values: 3,
        ..strict()
    };
    assert!(decode(b"li1ei2ee", &l).is_ok());
    let e = decode(b"li1ei2ei3ee", &l).unwrap_err();
    assert_eq!(e.to_string(), "bencode at byte 7: more than 3 values");
    // Keys do not count.
    assert!(decode(b"d1:ai1e1:bi2ee", &l).is_ok());

    let l = Limits {
        max_len: 4,
        ..strict()
    };
    assert!(decode(b"i12e", &l).is_ok());
    let e = decode(b"i123e", &l).unwrap_err();
    assert_eq!(
        e.to_string(),
        "bencode at byte 4: input is 5 bytes; accepted: at most 4"
    );
}

#[test]
fn long_keys_are_cut_in_messages() {
    let key = vec![b'k'; 100];
    let mut input = b"d".to_vec();
    for _ in 0..2 {
        encode_bytes(&mut input, &key);
        encode_int(&mut input, 1);
    }
    input.push(b'e');
    let e = decode(&input, &strict()).unwrap_err().to_string();
    assert!(
        e.ends_with(&format!("\"{}…\" repeated", "k".repeat(40))),
        "{e}"
    );
}

#[test]
fn raw_spans_are_the_bytes_decoded() {
    let input = b"d4:infod6:lengthi5ee1:xi0ee";
    let v = decode(input, &strict()).unwrap();
    let info = v
        .as_dict()
        .unwrap()
        .get(b"info")
        .unwrap()
        .as_dict()
        .unwrap();
    assert_eq!(info.raw(), b"d6:lengthi5ee");
    assert_eq!(v.as_dict().unwrap().raw(), input);
}

#[test]
fn decode_prefix_reports_what_it_took() {
    let (v, used) = decode_prefix(b"i7eXYZ", &strict()).unwrap();
    assert_eq!((v, used), (Value::Int(7), 3));
}

#[test]
fn insert_keeps_keys_sorted_and_unique() {
    let mut d = Dict::new();
    d.insert(b"pieces", Value::Int(1));
    d.insert(b"piece length", Value::Int(2));
    d.insert(b"length", Value::Int(3));
    d.insert(b"pieces", Value::Int(4));
    let keys: Vec<&[u8]> = d.entries().iter().map(|(k, _)| *k).collect();
    assert_eq!(keys, [&b"length"[..], b"piece length", b"pieces"]);
    assert_eq!(d.get(b"pieces"), Some(&Value::Int(4)));
}

/// An owned value tree for generating inputs.
#[derive(Debug, Clone)]
enum Tree {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<Tree>),
    Dict(BTreeMap<Vec<u8>, Tree>),
}

impl Tree {
    fn value(&self) -> Value<'_> {
        match self {
            Tree::Int(i) => Value::Int(*i),
            Tree::Bytes(b) => Value::Bytes(b),
            Tree::List(l) => Value::List(l.iter().map(Tree::value).collect()),
            Tree::Dict(m) => {
                let mut d = Dict::new();
                for (k, v) in m {
                    d.insert(k, v.value());
                }
                Value::Dict(d)
            }
        }
    }
}

fn tree() -> impl Strategy<Value = Tree> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(Tree::Int),
        (-3i64..300).prop_map(Tree::Int),
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(Tree::Bytes),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Tree::List),
            proptest::collection::btree_map(
                proptest::collection::vec(any::<u8>(), 0..8),
                inner,
                0..6
            )
            .prop_map(Tree::Dict),
        ]
    })
}

proptest! {
    #[test]
    fn round_trip(t in tree()) {
        let v = t.value();
        let bytes = v.to_bytes();
        let back = decode(&bytes, &strict()).unwrap();
        prop_assert_eq!(&back, &v);
        prop_assert_eq!(back.to_bytes(), bytes);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_what_decodes_is_canonical(
        input in proptest::collection::vec(
            prop_oneof![
                Just(b'i'), Just(b'e'), Just(b'l'), Just(b'd'), Just(b':'),
                Just(b'-'), Just(b'0'), Just(b'1'), Just(b'2'), any::<u8>()
            ],
            0..64,
        ),
        sorted in any::<bool>(),
    ) {
        let limits = Limits { sorted_keys: sorted, max_depth: 4, max_values: 20, ..LAX };
        match decode(&input, &limits) {
            Ok(v) => prop_assert_eq!(v.to_bytes(), input),
            Err(e) => {
                prop_assert!(e.offset <= input.len());
                prop_assert!(!e.to_string().contains('\n'));
            }
        }
    }
}
