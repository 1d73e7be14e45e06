//! Alpine's version order, written from the format (apk-tools' own code is GPL-2.0-only
//! and is not used; design §3.3).
//!
//! A version is `number{.number}…{letter}{_suffix{number}}…{~hash}{-rN}`. Pre-release
//! suffixes rank `alpha < beta < pre < rc` < none < `cvs < svn < git < hg < p`. After the
//! first number, a component with leading zeros ranks by its count of zeros (more zeros
//! are older) and then by its remaining digits, so `1.02 < 1.1` and `1.00 < 1.0`.

use std::cmp::Ordering;

/// What a token is. The order matters: where two versions continue with tokens of
/// different kinds, the one continuing with the earlier kind is newer (`1.2.3 < 1.2.3.1`,
/// `1.2.3 < 1.2.3-r1`), except that a pre-release suffix is always the older side.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    Number,
    Letter,
    Suffix,
    SuffixNumber,
    Revision,
    End,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Token {
    kind: Kind,
    value: i64,
}

const PRE_RELEASE: [&str; 4] = ["alpha", "beta", "pre", "rc"];
const POST_RELEASE: [&str; 5] = ["cvs", "svn", "git", "hg", "p"];

/// A parsed apk version (only valid versions parse).
#[derive(Clone, Debug)]
pub struct ApkVersion {
    tokens: Vec<Token>,
}

impl ApkVersion {
    pub fn parse(s: &str) -> Option<ApkVersion> {
        let mut parser = Parser {
            bytes: s.as_bytes(),
            at: 0,
            tokens: Vec::with_capacity(8),
        };
        parser.version()?;
        Some(ApkVersion {
            tokens: parser.tokens,
        })
    }
}

struct Parser<'a> {
    bytes: &'a [u8],
    at: usize,
    tokens: Vec<Token>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn push(&mut self, kind: Kind, value: i64) {
        self.tokens.push(Token { kind, value });
    }

    /// Digits as a number; very long runs saturate rather than fail.
    fn number(&mut self) -> Option<i64> {
        let start = self.at;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
        let digits = std::str::from_utf8(&self.bytes[start..self.at]).ok()?;
        if digits.is_empty() {
            return None;
        }
        Some(digits.parse::<i64>().unwrap_or(i64::MAX))
    }

    fn version(&mut self) -> Option<()> {
        let first = self.number()?;
        self.push(Kind::Number, first);
        while self.peek() == Some(b'.') {
            self.at += 1;
            let zeros_start = self.at;
            while self.peek() == Some(b'0') {
                self.at += 1;
            }
            let zeros = (self.at - zeros_start) as i64;
            if zeros > 0 {
                // Leading zeros rank below any plain number, fewer zeros being newer.
                self.push(Kind::Number, -zeros);
                if self.peek().is_some_and(|b| b.is_ascii_digit()) {
                    let rest = self.number()?;
                    self.push(Kind::Number, rest);
                }
            } else {
                let n = self.number()?;
                self.push(Kind::Number, n);
            }
        }
        if let Some(letter) = self.peek().filter(u8::is_ascii_lowercase) {
            self.push(Kind::Letter, i64::from(letter));
            self.at += 1;
        }
        while self.peek() == Some(b'_') {
            self.at += 1;
            let rest = &self.bytes[self.at..];
            let (rank, len) = if let Some(i) = PRE_RELEASE
                .iter()
                .position(|p| rest.starts_with(p.as_bytes()))
            {
                // Negative: older than the bare version.
                (i as i64 - PRE_RELEASE.len() as i64, PRE_RELEASE[i].len())
            } else if let Some(i) = POST_RELEASE
                .iter()
                .position(|p| rest.starts_with(p.as_bytes()))
            {
                (i as i64, POST_RELEASE[i].len())
            } else {
                return None;
            };
            self.at += len;
            self.push(Kind::Suffix, rank);
            if self.peek().is_some_and(|b| b.is_ascii_digit()) {
                let n = self.number()?;
                self.push(Kind::SuffixNumber, n);
            }
        }
        if self.peek() == Some(b'~') {
            // A commit hash; ordered by its first 15 hex digits (fits an i64).
            self.at += 1;
            let start = self.at;
            while self.peek().is_some_and(|b| b.is_ascii_hexdigit()) {
                self.at += 1;
            }
            let end = self.at.min(start + 15);
            let hex = std::str::from_utf8(&self.bytes[start..end]).ok()?;
            let value = i64::from_str_radix(hex, 16).ok()?;
            self.push(Kind::SuffixNumber, value);
        }
        if self.bytes[self.at..].starts_with(b"-r") {
            self.at += 2;
            let n = self.number()?;
            self.push(Kind::Revision, n);
        }
        (self.at == self.bytes.len()).then_some(())
    }
}

impl Ord for ApkVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        let end = Token {
            kind: Kind::End,
            value: 0,
        };
        let len = self.tokens.len().max(other.tokens.len());
        for i in 0..len {
            let a = self.tokens.get(i).copied().unwrap_or(end);
            let b = other.tokens.get(i).copied().unwrap_or(end);
            if a.kind == b.kind {
                match a.value.cmp(&b.value) {
                    Ordering::Equal => continue,
                    unequal => return unequal,
                }
            }
            // Different kinds: a pre-release suffix is older than whatever the other side
            // has there; otherwise the side continuing with the earlier kind is newer.
            if a.kind == Kind::Suffix && a.value < 0 {
                return Ordering::Less;
            }
            if b.kind == Kind::Suffix && b.value < 0 {
                return Ordering::Greater;
            }
            return b.kind.cmp(&a.kind);
        }
        Ordering::Equal
    }
}

impl PartialOrd for ApkVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for ApkVersion {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for ApkVersion {}
