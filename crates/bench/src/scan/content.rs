//! Deterministic pseudo-random content for the scan benchmark: a word list, text that
//! compresses like source and documentation, binary-like bytes that compress about 2:1,
//! and incompressible bytes. Everything is a function of a seed.

/// splitmix64: fast and good enough to make content, not for anything else.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n.max(1))) >> 64) as u64
    }

    /// True `pct` percent of the time.
    pub fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }

    /// Log-uniform in `lo..hi` (both > 0): many small values, a few large ones.
    pub fn log_uniform(&mut self, lo: u64, hi: u64) -> u64 {
        let (l, h) = ((lo.max(1) as f64).ln(), (hi.max(2) as f64).ln());
        let u = self.next_u64() as f64 / u64::MAX as f64;
        (l + (h - l) * u).exp() as u64
    }
}

/// A vocabulary of pronounceable made-up words, most frequent first.
pub struct Words(Vec<String>);

const SYLLABLES: [&str; 32] = [
    "ka", "lo", "mi", "ne", "ru", "sa", "te", "vi", "bo", "da", "fe", "gi", "ho", "ju", "pa",
    "qua", "ri", "so", "tu", "ve", "wi", "xo", "ya", "ze", "an", "el", "in", "or", "un", "st",
    "tr", "pl",
];

impl Words {
    pub fn new(n: usize, seed: u64) -> Words {
        let mut rng = Rng::new(seed);
        let mut seen = std::collections::HashSet::new();
        let mut list = Vec::with_capacity(n);
        while list.len() < n {
            let syllables = 1 + rng.below(3) as usize + usize::from(list.len() > 200);
            let w: String = (0..syllables)
                .map(|_| SYLLABLES[rng.below(SYLLABLES.len() as u64) as usize])
                .collect();
            if seen.insert(w.clone()) {
                list.push(w);
            }
        }
        Words(list)
    }

    /// A word, skewed towards the frequent ones as in natural text.
    pub fn pick(&self, rng: &mut Rng) -> &str {
        let r = rng.below(self.0.len() as u64);
        &self.0[rng.below(r + 1) as usize]
    }

    /// The `i`th word (wrapping), for names.
    pub fn nth(&self, i: usize) -> &str {
        &self.0[i % self.0.len()]
    }
}

/// Appends about `len` bytes of text: lines of words, some indented like code, some
/// with punctuation and numbers. gzip -6 shrinks it about 3:1, like real text files.
pub fn text(out: &mut Vec<u8>, len: usize, words: &Words, rng: &mut Rng) {
    let end = out.len() + len;
    let mut col = 0usize;
    while out.len() < end {
        if col == 0 {
            let indent = [0usize, 0, 4, 8, 4, 0, 12, 2][rng.below(8) as usize];
            out.extend(std::iter::repeat_n(b' ', indent));
            col = indent;
        }
        let w = words.pick(rng);
        out.extend_from_slice(w.as_bytes());
        col += w.len();
        match rng.below(24) {
            0 => out.extend_from_slice(b"."),
            1 => out.extend_from_slice(b","),
            2 => out.extend_from_slice(b"("),
            3 => out.extend_from_slice(b");"),
            4 => {
                let n = rng.below(10_000);
                out.extend_from_slice(format!(" {n}").as_bytes());
            }
            5 => out.extend_from_slice(b" = "),
            _ => {}
        }
        if col > 60 + rng.below(20) as usize {
            out.push(b'\n');
            col = 0;
        } else {
            out.push(b' ');
            col += 1;
        }
    }
    out.truncate(end);
    if let Some(last) = out.last_mut() {
        *last = b'\n';
    }
}

/// Appends `len` bytes that look like machine code or data tables: runs drawn from a
/// small dictionary of 8-byte words, zero padding and random stretches (about 2:1 with
/// gzip, like shared libraries).
pub fn binary(out: &mut Vec<u8>, len: usize, rng: &mut Rng) {
    let end = out.len() + len;
    let mut dict = Rng::new(0xB1_4A_27);
    let table: Vec<[u8; 8]> = (0..256).map(|_| dict.next_u64().to_le_bytes()).collect();
    while out.len() < end {
        match rng.below(10) {
            0..=3 => {
                for _ in 0..8 {
                    out.extend_from_slice(&rng.next_u64().to_le_bytes());
                }
            }
            4 | 5 => out.extend_from_slice(&[0u8; 64]),
            _ => {
                for _ in 0..8 {
                    out.extend_from_slice(&table[rng.below(256) as usize]);
                }
            }
        }
    }
    out.truncate(end);
}

/// Appends `len` incompressible bytes (images, archives already compressed).
pub fn random(out: &mut Vec<u8>, len: usize, rng: &mut Rng) {
    let end = out.len() + len;
    while out.len() < end {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(end);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_deterministic_and_text_is_text() {
        let words = Words::new(1000, 1);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        text(&mut a, 10_000, &words, &mut Rng::new(7));
        text(&mut b, 10_000, &words, &mut Rng::new(7));
        assert_eq!(a, b);
        assert_eq!(a.len(), 10_000);
        assert!(a.iter().all(|c| c.is_ascii()));
        assert!(a.iter().filter(|c| **c == b'\n').count() > 100);
        let mut c = Vec::new();
        binary(&mut c, 4097, &mut Rng::new(7));
        assert_eq!(c.len(), 4097);
        let mut r = Rng::new(3);
        assert!((0..1000).all(|_| (10..1000).contains(&r.log_uniform(10, 1000))));
    }
}
