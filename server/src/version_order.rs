//! Which image version is the newest. Pure.
//!
//! Versions are compared component by component, split at `.`: two
//! all-digit components compare as numbers (`1.10` > `1.9`, `007` = `7`),
//! two others as byte strings (`rc2` > `rc10`!), and an all-digit
//! component sorts before one that is not (`1.9` < `1.x`, `1.0` <
//! `1.0-rc1`: there is no notion of a pre-release). When all components
//! compare equal, the one with more components is newer (`1.0` < `1.0.1`).
//! Versions equal by those rules (`1.01` and `1.1`) fall back to a plain
//! byte comparison, so the order is total and `Equal` means identical.
//!
//! Putting numbers before text in mixed comparisons is what makes this a
//! total order: comparing `10` with `1a` as text while comparing `2` with
//! `10` as numbers would give the cycle `2 < 10 < 1a < 2`.

use std::cmp::Ordering;

/// Compare two versions (see the module docs).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let mut left = a.split('.');
    let mut right = b.split('.');
    loop {
        let order = match (left.next(), right.next()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => compare_component(x, y),
        };
        if order != Ordering::Equal {
            return order;
        }
    }
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn compare_component(x: &str, y: &str) -> Ordering {
    match (is_number(x), is_number(y)) {
        (true, true) => {
            // Arbitrary length: without leading zeros, the longer number is
            // larger, and equal lengths compare digit by digit.
            let x = x.trim_start_matches('0');
            let y = y.trim_start_matches('0');
            x.len().cmp(&y.len()).then_with(|| x.cmp(y))
        }
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => x.cmp(y),
    }
}

/// The newest of `versions`, if any.
pub fn newest<'a>(versions: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    versions.into_iter().max_by(|a, b| compare_versions(a, b))
}

/// Sort oldest first.
pub fn sort_versions(versions: &mut [String]) {
    versions.sort_by(|a, b| compare_versions(a, b));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascending_examples() {
        // Each is older than the next.
        let ordered = [
            "0",
            "1",
            "1.0",
            "1.0.1",
            "1.0.9",
            "1.0.10",
            "1.2",
            "1.9",
            "1.10",
            "1.0-rc1",
            "1.x",
            "2",
            "10",
            "10.0",
            "2024-01-05",
            "2024-11-30",
            "a",
            "b.1",
            "beta",
        ];
        for (i, a) in ordered.iter().enumerate() {
            assert_eq!(compare_versions(a, a), Ordering::Equal, "{a}");
            for b in &ordered[i + 1..] {
                assert_eq!(compare_versions(a, b), Ordering::Less, "{a} < {b}");
                assert_eq!(compare_versions(b, a), Ordering::Greater, "{b} > {a}");
            }
        }
        let mut shuffled: Vec<String> = ordered.iter().rev().map(|s| s.to_string()).collect();
        shuffled.swap(3, 11);
        sort_versions(&mut shuffled);
        assert_eq!(shuffled, ordered);
    }

    #[test]
    fn numbers_of_any_length() {
        assert_eq!(
            compare_versions("99999999999999999999999", "100000000000000000000000"),
            Ordering::Less
        );
        assert_eq!(compare_versions("1.10", "1.9"), Ordering::Greater);
        // Numerically equal: the plain bytes decide, never Equal.
        assert_eq!(compare_versions("1.01", "1.1"), Ordering::Less);
        assert_eq!(compare_versions("007", "7"), Ordering::Less);
        assert_eq!(compare_versions("0", "00"), Ordering::Less);
    }

    #[test]
    fn empty_components_are_text() {
        // `1..2` and `.1` are valid store names; they just sort somewhere.
        assert_eq!(compare_versions("1..2", "1.0.2"), Ordering::Greater);
        assert_eq!(compare_versions(".1", "0.1"), Ordering::Greater);
    }

    #[test]
    fn the_order_is_total() {
        // Transitivity over every triple of a mixed set (sort_by may panic
        // on an inconsistent order).
        let set = [
            "2", "10", "1a", "1.a", "1.2", "1.02", "a", "", "0", "00", "1.", "1..1",
        ];
        for a in set {
            for b in set {
                assert_eq!(
                    compare_versions(a, b),
                    compare_versions(b, a).reverse(),
                    "{a} {b}"
                );
                for c in set {
                    if compare_versions(a, b).is_le() && compare_versions(b, c).is_le() {
                        assert!(compare_versions(a, c).is_le(), "{a} <= {b} <= {c}");
                    }
                }
            }
        }
    }

    #[test]
    fn newest_of() {
        assert_eq!(newest(["1.9", "1.10", "1.2"]), Some("1.10"));
        assert_eq!(newest(Vec::<&str>::new()), None);
        assert_eq!(newest(["2024-01-05", "2023-12-31"]), Some("2024-01-05"));
    }
}
