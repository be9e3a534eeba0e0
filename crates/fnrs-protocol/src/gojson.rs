//! JSON encoding as Go's `encoding/json` writes it: compact, `&` `<` `>`
//! escaped as `\u0026` `\u003c` `\u003e`, U+2028/U+2029 escaped, invalid
//! UTF-8 replaced by U+FFFD.

/// Append `s` as a Go-escaped JSON string (with quotes).
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    escape_into(out, s);
    out.push(b'"');
}

/// Whether a byte needs a look in [`escape_into`]: ASCII that Go escapes, and
/// 0xE2, the first byte of U+2028 and U+2029.
const SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t[b'<' as usize] = true;
    t[b'>' as usize] = true;
    t[b'&' as usize] = true;
    t[0xe2] = true;
    t
};

/// Append `s` Go-escaped, without quotes. Escapes are per character, so
/// pieces of a string cut at character boundaries escape as the whole does.
fn escape_into(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !SPECIAL[b as usize] {
            i += 1;
            continue;
        }
        let esc: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            _ => None,
        };
        let (code, len) = match b {
            // U+2028 and U+2029 are E2 80 A8 and E2 80 A9; other characters
            // starting with E2 pass.
            0xe2 => match bytes.get(i + 1..i + 3) {
                Some([0x80, 0xa8]) => (0x2028, 3),
                Some([0x80, 0xa9]) => (0x2029, 3),
                _ => {
                    i += 1;
                    continue;
                }
            },
            _ => (u32::from(b), 1),
        };
        out.extend_from_slice(&bytes[start..i]);
        if let Some(e) = esc {
            out.extend_from_slice(e);
        } else {
            out.extend_from_slice(b"\\u");
            for shift in [12, 8, 4, 0] {
                out.push(HEX[((code >> shift) & 0xf) as usize]);
            }
        }
        i += len;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Append raw bytes as a Go-escaped JSON string; invalid UTF-8 becomes U+FFFD.
pub fn write_bytes_as_str(out: &mut Vec<u8>, b: &[u8]) {
    write_str(out, &String::from_utf8_lossy(b));
}

/// U+FFFD, which replaces invalid UTF-8 (not escaped by Go).
const REPLACEMENT: &[u8] = "\u{fffd}".as_bytes();

/// Escapes bytes fed in pieces as the inside of one JSON string, exactly as
/// [`write_bytes_as_str`] escapes them whole (invalid UTF-8 becomes U+FFFD,
/// also when a sequence is cut between pieces). Holds at most 3 bytes.
#[derive(Debug, Default, Clone)]
pub struct StrEscaper {
    /// The start of a character cut at the end of the last piece.
    cut: [u8; 4],
    cut_len: usize,
}

impl StrEscaper {
    /// Append the escaped `piece` (less a character cut at its end, kept for
    /// the next piece).
    pub fn push(&mut self, out: &mut Vec<u8>, mut piece: &[u8]) {
        if self.cut_len > 0 {
            // Complete the cut character with as much of `piece` as it needs.
            let k = self.cut_len;
            let take = (utf8_width(self.cut[0]) - k).min(piece.len());
            self.cut[k..k + take].copy_from_slice(&piece[..take]);
            let joined = &self.cut[..k + take];
            match std::str::from_utf8(joined) {
                Ok(s) => {
                    escape_into(out, s);
                    piece = &piece[take..];
                }
                Err(e) => match e.error_len() {
                    // Still cut: `piece` was too short.
                    None => {
                        self.cut_len = k + take;
                        return;
                    }
                    // Invalid: one U+FFFD for its first `n` bytes, as the
                    // lossy decoding of the whole would; go on after them.
                    Some(n) => {
                        out.extend_from_slice(REPLACEMENT);
                        piece = &piece[n - k..];
                    }
                },
            }
            self.cut_len = 0;
        }
        loop {
            match std::str::from_utf8(piece) {
                Ok(s) => return escape_into(out, s),
                Err(e) => {
                    let (valid, rest) = piece.split_at(e.valid_up_to());
                    escape_into(out, std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(n) => {
                            out.extend_from_slice(REPLACEMENT);
                            piece = &rest[n..];
                        }
                        None => {
                            self.cut[..rest.len()].copy_from_slice(rest);
                            self.cut_len = rest.len();
                            return;
                        }
                    }
                }
            }
        }
    }

    /// The stream ended: a character still cut is invalid (one U+FFFD).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.cut_len > 0 {
            self.cut_len = 0;
            out.extend_from_slice(REPLACEMENT);
        }
    }
}

/// How many bytes the UTF-8 sequence led by `b` takes (1 for anything that
/// does not lead one).
fn utf8_width(b: u8) -> usize {
    match b {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => 1,
    }
}

/// Append a `serde_json::Value` as Go would marshal an `interface{}`
/// holding it: object keys sorted, numbers as float64 (`1.50` → `1.5`,
/// `1e3` → `1000`), strings Go-escaped.
pub fn write_value(out: &mut Vec<u8>, v: &serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => write_float(out, n.as_f64().unwrap_or(0.0)),
        Value::String(s) => write_str(out, s),
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, x);
            }
            out.push(b']');
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, k);
                out.push(b':');
                write_value(out, &m[k]);
            }
            out.push(b'}');
        }
    }
}

/// A float64 as Go's `encoding/json` formats it ('f' format unless the
/// exponent is < -6 or >= 21, then 'e' with a two-digit minimum exponent).
pub fn write_float(out: &mut Vec<u8>, f: f64) {
    if !f.is_finite() {
        out.extend_from_slice(b"null");
        return;
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        // Shortest round-trip digits in exponent form, like Go: 1e+21, 1e-07.
        let s = format!("{f:e}");
        let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        out.extend_from_slice(mant.as_bytes());
        out.push(b'e');
        out.push(if exp < 0 { b'-' } else { b'+' });
        let e = exp.unsigned_abs();
        if e < 10 {
            out.push(b'0');
        }
        out.extend_from_slice(e.to_string().as_bytes());
    } else {
        // Rust's Display is the shortest round-trip decimal, no exponent.
        out.extend_from_slice(format!("{f}").as_bytes());
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `write_str` as it was before escaping went byte-wise and streamed:
    /// the reference the new code must match byte for byte.
    pub(crate) fn old_write_str(out: &mut Vec<u8>, s: &str) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out.push(b'"');
        let bytes = s.as_bytes();
        let mut start = 0;
        for (i, c) in s.char_indices() {
            let esc: Option<&[u8]> = match c {
                '"' => Some(b"\\\""),
                '\\' => Some(b"\\\\"),
                '\n' => Some(b"\\n"),
                '\r' => Some(b"\\r"),
                '\t' => Some(b"\\t"),
                _ => None,
            };
            let needs_u = matches!(
                c,
                '\u{0}'..='\u{1f}' | '<' | '>' | '&' | '\u{2028}' | '\u{2029}'
            );
            if esc.is_none() && !needs_u {
                continue;
            }
            out.extend_from_slice(&bytes[start..i]);
            if let Some(e) = esc {
                out.extend_from_slice(e);
            } else {
                let n = c as u32;
                out.extend_from_slice(b"\\u");
                for shift in [12, 8, 4, 0] {
                    out.push(HEX[((n >> shift) & 0xf) as usize]);
                }
            }
            start = i + c.len_utf8();
        }
        out.extend_from_slice(&bytes[start..]);
        out.push(b'"');
    }

    /// The old whole-body encoding of raw bytes.
    pub(crate) fn old_bytes_as_str(b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        old_write_str(&mut out, &String::from_utf8_lossy(b));
        out
    }

    /// A small deterministic PRNG (xorshift64*), so that failures replay.
    pub(crate) struct Rng(pub(crate) u64);

    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        pub(crate) fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        /// Bytes rich in what escaping and UTF-8 decoding care about: ASCII
        /// specials, whole and cut multi-byte characters, U+2028/9, stray
        /// continuation and invalid lead bytes.
        pub(crate) fn body(&mut self, max: usize) -> Vec<u8> {
            const PIECES: &[&[u8]] = &[
                b"a",
                b"z",
                b"\"",
                b"\\",
                b"\n",
                b"\r",
                b"\t",
                b"\x00",
                b"\x1f",
                b"<",
                b">",
                b"&",
                b" ",
                b"\x7f",
                "é".as_bytes(),
                "€".as_bytes(),
                "😀".as_bytes(),
                "\u{2028}".as_bytes(),
                "\u{2029}".as_bytes(),
                "\u{2027}".as_bytes(),
                "\u{fffd}".as_bytes(),
                b"\xe2",
                b"\xe2\x80",
                b"\xf0\x9f",
                b"\xf0\x9f\x98",
                b"\xc3",
                b"\x80",
                b"\xbf",
                b"\xff",
                b"\xc0\xaf",
                b"\xe0\x80\x80",
                b"\xed\xa0\x80",
                b"\xf4\x90\x80\x80",
                b"\xf5",
            ];
            let n = self.below(max + 1);
            let mut out = Vec::with_capacity(n * 2);
            while out.len() < n {
                if self.below(8) == 0 {
                    out.push(self.next() as u8);
                } else {
                    out.extend_from_slice(PIECES[self.below(PIECES.len())]);
                }
            }
            out
        }

        /// `body` cut into random pieces (some empty).
        pub(crate) fn cuts<'a>(&mut self, body: &'a [u8]) -> Vec<&'a [u8]> {
            let mut pieces = Vec::new();
            let mut at = 0;
            while at < body.len() {
                let len = self.below((body.len() - at).min(9) + 1);
                pieces.push(&body[at..at + len]);
                at += len;
            }
            if self.below(2) == 0 {
                pieces.push(&[]);
            }
            pieces
        }
    }

    /// Streamed escaping, for random bodies cut at random places, is byte
    /// for byte the old escaping of the whole body.
    #[test]
    fn streamed_escaping_matches_the_whole_body_encoding() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for case in 0..20_000 {
            let body = rng.body(if case % 10 == 0 { 400 } else { 24 });
            let want = old_bytes_as_str(&body);
            let mut whole = Vec::new();
            write_bytes_as_str(&mut whole, &body);
            assert_eq!(whole, want, "whole, body {body:?}");
            let pieces = rng.cuts(&body);
            let mut out = vec![b'"'];
            let mut esc = StrEscaper::default();
            for p in &pieces {
                esc.push(&mut out, p);
            }
            esc.finish(&mut out);
            out.push(b'"');
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&want),
                "case {case}, pieces {pieces:?}"
            );
        }
        // Every cut of every short sequence of interesting bytes.
        for body in [
            &b"\xf0\x9f\x98\x80\xe2\x80\xa8x"[..],
            b"\xe0\x80\xf0\x9f\x98",
            b"\xe2\x80\xa9\xe2\x80\xa7\xe2",
            b"\xf0\x9f\xff\xc3\xa9",
        ] {
            for i in 0..=body.len() {
                for j in i..=body.len() {
                    let mut out = vec![b'"'];
                    let mut esc = StrEscaper::default();
                    for p in [&body[..i], &body[i..j], &body[j..]] {
                        esc.push(&mut out, p);
                    }
                    esc.finish(&mut out);
                    out.push(b'"');
                    assert_eq!(out, old_bytes_as_str(body), "{body:?} cut at {i}, {j}");
                }
            }
        }
    }

    fn enc(v: &str) -> String {
        let mut o = Vec::new();
        write_value(&mut o, &serde_json::from_str(v).unwrap());
        String::from_utf8(o).unwrap()
    }

    #[test]
    fn like_go() {
        let mut o = Vec::new();
        write_str(&mut o, "q=1&x=<a>\u{1}\"\\\né");
        assert_eq!(
            String::from_utf8(o).unwrap(),
            r#""q=1\u0026x=\u003ca\u003e\u0001\"\\\né""#
        );
        assert_eq!(
            enc(r#"{"n":1.50,"a":1e3,"b":[true,null,"x"]}"#),
            r#"{"a":1000,"b":[true,null,"x"],"n":1.5}"#
        );
        assert_eq!(enc("1e21"), "1e+21");
        assert_eq!(enc("0.0000001"), "1e-07");
        assert_eq!(enc("-0.5"), "-0.5");
        assert_eq!(enc("123456789012"), "123456789012");
        let mut o = Vec::new();
        write_bytes_as_str(&mut o, b"a\xffb");
        assert_eq!(String::from_utf8(o).unwrap(), "\"a\u{fffd}b\"");
    }
}
