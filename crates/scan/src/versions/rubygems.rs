//! RubyGems' version order (`Gem::Version`), written from its documented rules:
//!
//! - A version is digits, then `.`-separated alphanumeric parts, optionally followed by
//!   `-` and more parts; each `-` reads as `.pre.`, so `1.0-1` is a pre-release.
//! - Segments are the runs of digits and of letters (`1.0a1` is `1, 0, "a", 1`).
//! - Any letter makes the version a pre-release, which sorts before the release.
//! - Trailing zeros do not count (`1.0 == 1`), separately before and after the first
//!   letter segment (`1.0.a == 1.a`).
//! - Segments compare pairwise, a missing one reading as 0: numbers by value, letters
//!   as strings, and a letter segment is older than a number.

use std::cmp::Ordering;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    /// Digits without leading zeros (`""` is zero), compared by length then text so that
    /// any size works.
    Number(String),
    Letters(String),
}

impl Segment {
    fn is_zero(&self) -> bool {
        matches!(self, Segment::Number(n) if n.is_empty())
    }
}

impl Ord for Segment {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Segment::Number(a), Segment::Number(b)) => a.len().cmp(&b.len()).then(a.cmp(b)),
            (Segment::Letters(a), Segment::Letters(b)) => a.cmp(b),
            (Segment::Letters(_), Segment::Number(_)) => Ordering::Less,
            (Segment::Number(_), Segment::Letters(_)) => Ordering::Greater,
        }
    }
}

impl PartialOrd for Segment {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A parsed gem version, in canonical segments (trailing zeros dropped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GemVersion {
    segments: Vec<Segment>,
}

impl GemVersion {
    /// `None` unless `s` matches RubyGems' version pattern. Blank reads as `0`.
    pub fn parse(s: &str) -> Option<GemVersion> {
        let s = s.trim();
        if !valid(s) {
            return None;
        }
        let text = s.replace('-', ".pre.");
        let mut segments = Vec::new();
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let start = i;
            if bytes[i].is_ascii_digit() {
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
                let digits = text[start..i].trim_start_matches('0');
                segments.push(Segment::Number(digits.to_string()));
            } else if bytes[i].is_ascii_alphabetic() {
                while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
                    i += 1;
                }
                segments.push(Segment::Letters(text[start..i].to_string()));
            } else {
                i += 1;
            }
        }
        // Drop trailing zeros of the release part and of the pre-release part separately.
        let first_letters = segments
            .iter()
            .position(|s| matches!(s, Segment::Letters(_)))
            .unwrap_or(segments.len());
        let mut pre = segments.split_off(first_letters);
        while segments.last().is_some_and(Segment::is_zero) {
            segments.pop();
        }
        while pre.last().is_some_and(Segment::is_zero) {
            pre.pop();
        }
        segments.append(&mut pre);
        Some(GemVersion { segments })
    }

    /// Whether any segment is letters (RubyGems' `prerelease?`).
    pub fn is_prerelease(&self) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, Segment::Letters(_)))
    }
}

/// `[0-9]+(\.[0-9a-zA-Z]+)*(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?`, or blank.
fn valid(s: &str) -> bool {
    if s.is_empty() {
        return true;
    }
    let (release, pre) = match s.split_once('-') {
        Some((r, p)) => (r, Some(p)),
        None => (s, None),
    };
    let mut parts = release.split('.');
    let first_ok = parts
        .next()
        .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let rest_ok = parts.all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric()));
    let pre_ok = pre.is_none_or(|p| {
        p.split('.').all(|part| {
            !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
    });
    first_ok && rest_ok && pre_ok
}

impl Ord for GemVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        let zero = Segment::Number(String::new());
        let len = self.segments.len().max(other.segments.len());
        for i in 0..len {
            let a = self.segments.get(i).unwrap_or(&zero);
            let b = other.segments.get(i).unwrap_or(&zero);
            match a.cmp(b) {
                Ordering::Equal => continue,
                unequal => return unequal,
            }
        }
        Ordering::Equal
    }
}

impl PartialOrd for GemVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
