//! The kernel's word splitting, `lib/cmdline.c: next_arg()`, byte for byte.
//!
//! Reproducing its quirks (rather than a "sensible" shell-like split) means
//! the agent sees the same words the kernel saw, so a line that boots the
//! kernel the way the operator expects also configures the agent that way:
//! - a word starts at a non-space; whitespace ends it unless inside quotes;
//!   every `"` toggles "inside quotes", wherever it is;
//! - the key ends at the first `=` (but an `=` as the very first character
//!   does not count: the kernel's `equals == 0` means "none");
//! - a value that starts with `"` loses it, and loses a `"` at the word's end;
//! - a word that starts with `"` loses it, and loses a `"` at the word's end
//!   (`"key=a b"`);
//! - other quotes stay (`a"b c"d` is one word, quotes included);
//! - a NUL ends the line (C strings).
//!
//! One deliberate difference: the kernel's `isspace()` is Latin-1 and also
//! splits on byte 0xA0, which occurs inside UTF-8 sequences (U+00A0, `Р`, …).
//! We split on ASCII whitespace only, so words stay valid UTF-8. Every value
//! drover accepts is ASCII, so no accepted value is affected.

/// Whitespace as the kernel's `isspace()` sees it, restricted to ASCII.
/// (Not `u8::is_ascii_whitespace`: that omits `\v`, which the kernel counts.)
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Split a command line into `(key, value)` words the way the kernel does;
/// `value` is `None` for a word without `=` (a bare flag, or the image name
/// UEFI puts first).
///
/// ```
/// let words = kernel_cmdline::split(r#"vmlinuz quiet deploy.disk="serial:A B" "x=1 2""#);
/// assert_eq!(words, vec![
///     ("vmlinuz".to_string(), None),
///     ("quiet".to_string(), None),
///     ("deploy.disk".to_string(), Some("serial:A B".to_string())),
///     ("x".to_string(), Some("1 2".to_string())),
/// ]);
/// ```
pub fn split(cmdline: &str) -> Vec<(String, Option<String>)> {
    // A NUL ends a C string; the kernel never sees past it.
    let line = match cmdline.find('\0') {
        Some(nul) => cmdline.get(..nul).unwrap_or_default(),
        None => cmdline,
    };
    let bytes = line.as_bytes();
    let mut words = Vec::new();
    let mut pos = skip_spaces(bytes, 0);
    while pos < bytes.len() {
        let (word, next) = next_arg(line, pos);
        words.push(word);
        pos = skip_spaces(bytes, next);
    }
    words
}

fn skip_spaces(bytes: &[u8], mut pos: usize) -> usize {
    while bytes.get(pos).copied().is_some_and(is_space) {
        pos += 1;
    }
    pos
}

/// One word starting at `pos` (not a space, not the end): the word and the
/// position just after its terminating space.
///
/// Every index used to cut `line` sits on an ASCII byte (`"`, `=`, a space)
/// or at the end, so each is a char boundary; `get` keeps that from ever
/// panicking even if this reasoning were wrong.
fn next_arg(line: &str, pos: usize) -> ((String, Option<String>), usize) {
    let b = line.as_bytes();
    let mut start = pos;
    let mut in_quote = false;
    let mut quoted = false;
    if b.get(start) == Some(&b'"') {
        start += 1;
        in_quote = true;
        quoted = true;
    }

    let mut equals = None;
    let mut end = start;
    while let Some(&c) = b.get(end) {
        if is_space(c) && !in_quote {
            break;
        }
        // The kernel records `equals = i` only while `equals == 0`, so an `=`
        // at offset 0 is indistinguishable from "no `=`".
        if equals.is_none() && c == b'=' && end != start {
            equals = Some(end);
        }
        if c == b'"' {
            in_quote = !in_quote;
        }
        end += 1;
    }

    // The kernel cuts strings by writing NULs; here each cut shortens a range.
    let last_is_quote = end > start && b.get(end - 1) == Some(&b'"');
    let (key_end, value) = match equals {
        None => {
            let key_end = if quoted && last_is_quote {
                end - 1
            } else {
                end
            };
            (key_end, None)
        }
        Some(eq) => {
            let mut v_start = eq + 1;
            let mut v_end = end;
            if b.get(v_start) == Some(&b'"') {
                v_start += 1;
                if last_is_quote {
                    v_end = end - 1;
                }
            }
            if quoted && last_is_quote {
                v_end = end - 1;
            }
            // `key="` : the closing-quote cut lands before the value start.
            let v_end = v_end.max(v_start);
            (
                eq,
                Some(line.get(v_start..v_end).unwrap_or_default().to_owned()),
            )
        }
    };
    let key = line.get(start..key_end).unwrap_or_default().to_owned();
    // Skip the terminating space, if any (the kernel's `args += i + 1`).
    let next = if end < b.len() { end + 1 } else { end };
    ((key, value), next)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Expected = (&'static str, Option<&'static str>);

    fn w(k: &str, v: Option<&str>) -> (String, Option<String>) {
        (k.to_owned(), v.map(str::to_owned))
    }

    #[test]
    fn table() {
        #[rustfmt::skip]
        let cases: &[(&str, &[Expected])] = &[
            ("", &[]),
            ("   \t\n", &[]),
            ("a", &[("a", None)]),
            ("a=1", &[("a", Some("1"))]),
            ("a=", &[("a", Some(""))]),
            ("  a=1   b  ", &[("a", Some("1")), ("b", None)]),
            ("a=1\tb=2\nc=3\x0bd\x0ce\rf", &[
                ("a", Some("1")), ("b", Some("2")), ("c", Some("3")),
                ("d", None), ("e", None), ("f", None),
            ]),
            // value quoting
            (r#"k="a b" x"#, &[("k", Some("a b")), ("x", None)]),
            (r#"k="""#, &[("k", Some(""))]),
            (r#"k=""#, &[("k", Some(""))]),
            // whole-word quoting
            (r#""k=a b" x"#, &[("k", Some("a b")), ("x", None)]),
            (r#""bare word""#, &[("bare word", None)]),
            (r#"""#, &[("", None)]),
            (r#""""#, &[("", None)]),
            // quotes in the middle group but stay
            (r#"k=a"b c"d e"#, &[("k", Some(r#"a"b c"d"#)), ("e", None)]),
            (r#"a"b c"=d"#, &[(r#"a"b c""#, Some("d"))]),
            // an unterminated quote runs to the end
            (r#"k="a b c"#, &[("k", Some("a b c"))]),
            // only the first `=` splits
            ("k=a=b", &[("k", Some("a=b"))]),
            // `=` first does not count (kernel's equals == 0)
            ("=x", &[("=x", None)]),
            ("=x=y", &[("=x", Some("y"))]),
            // NUL ends the line
            ("a=1\0b=2", &[("a", Some("1"))]),
            // non-ASCII stays inside words
            ("k=é\u{a0}x y", &[("k", Some("é\u{a0}x")), ("y", None)]),
            // UEFI puts the image path first
            (r"\vmlinuz deploy.image=x", &[(r"\vmlinuz", None), ("deploy.image", Some("x"))]),
        ];
        for (line, want) in cases {
            let want: Vec<_> = want.iter().map(|(k, v)| w(k, *v)).collect();
            assert_eq!(split(line), want, "split({line:?})");
        }
    }
}
