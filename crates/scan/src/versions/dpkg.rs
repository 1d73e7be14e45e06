//! Debian's version order, written from deb-version(7).
//!
//! The debversion crate (the research brief's choice) departs from dpkg where one side
//! has no digits left: the manual page says an empty digit run counts as zero, so
//! `1.0a == 1.0a0` and `1.0~ == 1.0~0` (checked with `dpkg --compare-versions`), while
//! debversion 0.5.5 orders them. This is the documented algorithm, and it parses without
//! allocating.
//!
//! `[epoch:]upstream[-revision]`: the epoch is a number; the revision is what follows the
//! last hyphen. Parts compare in turn, each as alternating runs of non-digits (compared
//! character by character: `~` before the end, the end before letters, letters before
//! everything else) and digits (compared by value, an empty run being zero).

use std::cmp::Ordering;

#[derive(Clone, Debug)]
pub struct DpkgVersion<'a> {
    epoch: u32,
    upstream: &'a str,
    revision: &'a str,
}

impl<'a> DpkgVersion<'a> {
    /// `None` for what dpkg refuses: a non-numeric epoch, an empty upstream version or
    /// revision, or characters outside the allowed sets.
    pub fn parse(s: &'a str) -> Option<DpkgVersion<'a>> {
        let (epoch, rest) = match s.split_once(':') {
            Some((epoch, rest)) => {
                if epoch.is_empty() || !epoch.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                (epoch.parse().ok()?, rest)
            }
            None => (0, s),
        };
        let (upstream, revision) = match rest.rsplit_once('-') {
            Some((_, "")) => return None,
            Some((upstream, revision)) => (upstream, revision),
            None => (rest, ""),
        };
        let upstream_ok = |b: u8| b.is_ascii_alphanumeric() || b".+~-:".contains(&b);
        let revision_ok = |b: u8| b.is_ascii_alphanumeric() || b".+~".contains(&b);
        if upstream.is_empty()
            || !upstream.bytes().all(upstream_ok)
            || !revision.bytes().all(revision_ok)
        {
            return None;
        }
        Some(DpkgVersion {
            epoch,
            upstream,
            revision,
        })
    }
}

impl Ord for DpkgVersion<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| compare_part(self.upstream, other.upstream))
            .then_with(|| compare_part(self.revision, other.revision))
    }
}

impl PartialOrd for DpkgVersion<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for DpkgVersion<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for DpkgVersion<'_> {}

/// The weight of a character in a non-digit run; the end of the run (a digit or the end
/// of the string) weighs 0.
fn weight(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

fn compare_part(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let digit_at = |s: &[u8], k: usize| s.get(k).is_some_and(u8::is_ascii_digit);
    while i < a.len() || j < b.len() {
        // Non-digit runs. Both sides advance together: equal weights mean both are the
        // same non-digit character (a lone end or digit weighs 0, unlike any character).
        while (i < a.len() && !digit_at(a, i)) || (j < b.len() && !digit_at(b, j)) {
            let (wa, wb) = (weight(a.get(i).copied()), weight(b.get(j).copied()));
            if wa != wb {
                return wa.cmp(&wb);
            }
            i += 1;
            j += 1;
        }
        // Digit runs, by value: skip leading zeros, then the longer run is larger, and
        // at equal length the first differing digit decides.
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_difference = Ordering::Equal;
        while digit_at(a, i) && digit_at(b, j) {
            if first_difference == Ordering::Equal {
                first_difference = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if digit_at(a, i) {
            return Ordering::Greater;
        }
        if digit_at(b, j) {
            return Ordering::Less;
        }
        if first_difference != Ordering::Equal {
            return first_difference;
        }
    }
    Ordering::Equal
}
