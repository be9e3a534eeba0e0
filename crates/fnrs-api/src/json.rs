//! JSON written byte for byte as Go's `encoding/json` writes it: compact,
//! with `<`, `>`, `&`, U+2028 and U+2029 escaped.

use std::io;

use serde::Serialize;
use serde_json::ser::{CompactFormatter, Formatter};

struct GoFormatter;

impl Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let esc = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            writer.write_all(&fragment.as_bytes()[start..i])?;
            writer.write_all(esc.as_bytes())?;
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    fn write_null<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        CompactFormatter.write_null(writer)
    }
}

/// `value` as Go would marshal it.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GoFormatter);
    // Serialising plain data into a Vec cannot fail.
    if value.serialize(&mut ser).is_err() {
        out.clear();
        out.extend_from_slice(b"null");
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_like_go() {
        let v = serde_json::json!({"m": "a<b>&c\u{2028}é"});
        assert_eq!(
            String::from_utf8(super::to_vec(&v)).unwrap(),
            r#"{"m":"a\u003cb\u003e\u0026c\u2028é"}"#
        );
    }
}
