//! JSON encoding as Go's `encoding/json` writes it: compact, `&` `<` `>`
//! escaped as `\u0026` `\u003c` `\u003e`, U+2028/U+2029 escaped, invalid
//! UTF-8 replaced by U+FFFD.

/// Append `s` as a Go-escaped JSON string (with quotes).
pub fn write_str(out: &mut Vec<u8>, s: &str) {
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

/// Append raw bytes as a Go-escaped JSON string; invalid UTF-8 becomes U+FFFD.
pub fn write_bytes_as_str(out: &mut Vec<u8>, b: &[u8]) {
    write_str(out, &String::from_utf8_lossy(b));
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
mod tests {
    use super::*;

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
