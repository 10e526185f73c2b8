//! A compact JSON writer for records: members written straight into the record buffer in
//! the order the caller gives them.
//!
//! Why not serde: every call of the server writes a record of about 1 KiB, nearly all of
//! it strings, and serde_json's string escaping looks at one byte at a time (it was a
//! third of the cost of building a record; BENCHMARKS.md "Audit trail cost"). Here a
//! string is first checked for anything to escape with a loop the compiler vectorises,
//! and copied whole when there is nothing, which is the usual case. The output is the
//! same as serde_json's compact output, byte for byte (tested below), so records read
//! back by serde and hashed by the chain are unchanged.

use std::fmt::Display;
use std::io::Write as _;

use serde_json::Value;

/// A member name, written by kura: plain ASCII, quoted at compile time with the comma
/// and colon around it (`,"name":`), so that writing it is one copy. Made by [`key!`].
#[derive(Clone, Copy)]
pub(crate) struct Key(pub(crate) &'static str);

/// The [`Key`] of a member name: `key!("eventTime")`.
macro_rules! key {
    ($name:literal) => {
        $crate::json::Key(concat!(",\"", $name, "\":"))
    };
}
pub(crate) use key;

/// An object being written into `out`: open it, add members, [`Object::close`] it.
pub(crate) struct Object<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> Object<'a> {
    pub(crate) fn open(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, empty: true }
    }

    pub(crate) fn close(self) {
        self.out.push(b'}');
    }

    fn key(&mut self, key: Key) {
        let quoted = key.0.as_bytes();
        debug_assert!(!needs_escape(
            quoted.get(2..quoted.len() - 2).unwrap_or_default()
        ));
        // The first member has no comma before it.
        let start = usize::from(self.empty);
        self.empty = false;
        self.out
            .extend_from_slice(quoted.get(start..).unwrap_or_default());
    }

    /// A member name from data (the members of a JSON value).
    fn data_key(&mut self, key: &str) {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        write_str(self.out, key);
        self.out.push(b':');
    }

    pub(crate) fn str(&mut self, key: Key, value: &str) {
        self.key(key);
        write_str(self.out, value);
    }

    /// The member only if there is a value.
    pub(crate) fn opt_str(&mut self, key: Key, value: Option<&str>) {
        if let Some(value) = value {
            self.str(key, value);
        }
    }

    /// A string member whose text comes from `Display` (timestamps, addresses), written
    /// without an intermediate `String`.
    pub(crate) fn display(&mut self, key: Key, value: impl Display) {
        self.key(key);
        self.out.push(b'"');
        let start = self.out.len();
        // Writing into a Vec cannot fail.
        let _ = write!(self.out, "{value}");
        if needs_escape(self.out.get(start..).unwrap_or_default()) {
            let text = self.out.split_off(start);
            write_escaped(self.out, &text);
        }
        self.out.push(b'"');
    }

    pub(crate) fn bool(&mut self, key: Key, value: bool) {
        self.key(key);
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

    /// A JSON value, or `null` when there is none.
    pub(crate) fn value(&mut self, key: Key, value: Option<&Value>) {
        self.key(key);
        match value {
            Some(value) => write_value(self.out, value),
            None => self.out.extend_from_slice(b"null"),
        }
    }

    /// A nested object, written by `fill`.
    pub(crate) fn object(&mut self, key: Key, fill: impl FnOnce(&mut Object<'_>)) {
        self.key(key);
        let mut inner = Object::open(self.out);
        fill(&mut inner);
        inner.close();
    }

    /// An array of objects, one per item, each written by `fill`.
    pub(crate) fn objects<T>(&mut self, key: Key, items: &[T], fill: impl Fn(&mut Object<'_>, &T)) {
        self.key(key);
        self.out.push(b'[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            let mut inner = Object::open(self.out);
            fill(&mut inner, item);
            inner.close();
        }
        self.out.push(b']');
    }
}

/// Whether any byte of `bytes` must be escaped in a JSON string: a control character,
/// `"` or `\`. Eight bytes at a time, without branches per byte (most strings of a
/// record are short, so the per-string cost matters as much as the per-byte one).
fn needs_escape(bytes: &[u8]) -> bool {
    let mut words = bytes.chunks_exact(8);
    let mut found = 0;
    for word in &mut words {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(word);
        found |= escape_bytes(u64::from_le_bytes(eight));
    }
    // The tail, padded with spaces (which need no escape), a byte at a time: a copy of
    // a variable length would be a call to memcpy, dearer than these few shifts.
    let tail = words
        .remainder()
        .iter()
        .rev()
        .fold(u64::from_le_bytes([b' '; 8]), |word, &b| {
            (word << 8) | u64::from(b)
        });
    found |= escape_bytes(tail);
    found != 0
}

/// Nonzero if any of the eight bytes in `word` needs an escape. The classic zero-byte
/// test, `(v - 0x01..) & !v & 0x80..`, is nonzero exactly when some byte of `v` is zero
/// (and, with `0x20` in place of `0x01`, when some byte is below 0x20); bytes of 0x80
/// and above (UTF-8) never count, as `!v` clears their high bit.
fn escape_bytes(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v;
    let control = word.wrapping_sub(ONES * 0x20) & !word;
    let quote = zero_byte(word ^ (ONES * u64::from(b'"')));
    let backslash = zero_byte(word ^ (ONES * u64::from(b'\\')));
    (control | quote | backslash) & HIGH_BITS
}

/// `text` as a quoted JSON string, escaped as serde_json escapes it: `"`, `\` and
/// control characters only (other characters, non-ASCII included, are written as is).
pub(crate) fn write_str(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    let bytes = text.as_bytes();
    if needs_escape(bytes) {
        write_escaped(out, bytes);
    } else {
        out.extend_from_slice(bytes);
    }
    out.push(b'"');
}

fn write_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut plain_from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ],
            _ => continue,
        };
        out.extend_from_slice(bytes.get(plain_from..i).unwrap_or_default());
        out.extend_from_slice(escape);
        plain_from = i + 1;
    }
    out.extend_from_slice(bytes.get(plain_from..).unwrap_or_default());
}

/// A `serde_json::Value`, compact, members in the map's order.
pub(crate) fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        // Numbers are rare in records; serde_json writes them exactly as it reads them.
        Value::Number(n) => {
            let _ = serde_json::to_writer(&mut *out, n);
        }
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(members) => {
            let mut object = Object::open(out);
            for (key, member) in members {
                object.data_key(key);
                write_value(object.out, member);
            }
            object.close();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    fn as_serde(value: &Value) -> Vec<u8> {
        serde_json::to_vec(value).unwrap()
    }

    fn as_ours(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        write_value(&mut out, value);
        out
    }

    #[test]
    fn values_are_written_as_serde_json_writes_them() {
        let every_control: String = (0u8..0x20).map(char::from).collect();
        let values = [
            json!(null),
            json!(true),
            json!({"a": false, "n": 1, "neg": -7, "f": 1.5, "big": 18446744073709551615u64}),
            json!({"nested": {"list": [1, "two", null, {"three": [3.0e-7]}]}, "empty": {}, "none": []}),
            json!({"quote\"key": "back\\slash", "tab": "a\tb", "nl": "x\ny\r\n"}),
            json!({"ctl": every_control, "del": "\u{7f}", "utf8": "蔵 é 😀", "slash": "a/b"}),
            json!(["", "\"", "\\", "\u{1}", "end\u{1f}"]),
        ];
        for value in &values {
            assert_eq!(
                String::from_utf8(as_ours(value)).unwrap(),
                String::from_utf8(as_serde(value)).unwrap()
            );
        }
    }

    #[test]
    fn strings_of_every_byte_mix_match_serde_json() {
        // Each printable ASCII character and each control character, at each place in
        // strings of lengths around the vector widths.
        let specials = ['"', '\\', '\n', '\u{0}', '\u{1f}', 'a', '蔵'];
        for len in [0usize, 1, 15, 16, 17, 31, 32, 33, 64] {
            for &special in &specials {
                for at in 0..len.max(1) {
                    let text: String = (0..len)
                        .map(|i| if i == at { special } else { 'x' })
                        .collect();
                    let mut ours = Vec::new();
                    write_str(&mut ours, &text);
                    assert_eq!(ours, serde_json::to_vec(&text).unwrap(), "{text:?}");
                }
            }
        }
    }

    #[test]
    fn the_eight_byte_test_agrees_with_a_byte_at_a_time_test() {
        // Neighbours of the bytes that need escapes, and multi-byte characters, mixed at
        // random (a fixed sequence): the word test must neither miss nor invent one.
        let alphabet = [
            '"', '\\', '\u{0}', '\u{1f}', ' ', '!', '#', '[', ']', '\u{7f}', '\u{80}', 'ÿ', '蔵',
            'a',
        ];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 40) as usize;
            let text: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let expected = text.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\');
            assert_eq!(needs_escape(text.as_bytes()), expected, "{text:?}");
        }
    }

    #[test]
    fn objects_are_written_in_the_order_given() {
        let mut out = Vec::new();
        let mut object = Object::open(&mut out);
        object.str(key!("b"), "1");
        object.opt_str(key!("skipped"), None);
        object.bool(key!("a"), true);
        object.display(key!("ip"), std::net::Ipv4Addr::LOCALHOST);
        object.value(key!("v"), None);
        object.object(key!("o"), |o| o.str(key!("k"), "v\""));
        object.objects(key!("list"), &[1, 2], |o, n| o.display(key!("n"), n));
        object.close();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"b":"1","a":true,"ip":"127.0.0.1","v":null,"o":{"k":"v\""},"list":[{"n":"1"},{"n":"2"}]}"#
        );
    }
}
