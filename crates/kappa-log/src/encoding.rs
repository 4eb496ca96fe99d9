//! Value encodings: how application values become block bytes (spec §2.8).
//!
//! hypercore stores and hashes encoded bytes, so a Rust writer must produce exactly
//! the bytes a JS writer would, or signatures cover something JS apps do not expect.
//!
//! * [`Binary`]: bytes as given (hypercore's default).
//! * [`Utf8`]: UTF-8 text.
//! * [`Json`]: `JSON.stringify(value) + "\n"`. hypercore 8 silently replaces
//!   `valueEncoding: 'json'` by `ndjson`, so the newline is part of every block.
//!
//! # JSON compatibility with `JSON.stringify`
//!
//! Output is compact (no spaces) and object keys keep their order: the field order
//! of a `#[derive(Serialize)]` struct, or insertion order for `serde_json::Value`
//! (this crate enables `preserve_order`), which is what JS does for objects built
//! in the same order. Strings are escaped as JS does (`"`, `\`, and control
//! characters, with `\b \f \n \r \t` short forms and lowercase `\u00xx`
//! otherwise). Floating-point numbers are printed with JS's `Number.prototype.
//! toString` rules (`1` not `1.0`, `1e+21`, `1e-7`, `-0` as `0`, NaN and infinities
//! as `null`).
//!
//! Where the bytes can still differ from JS:
//!
//! * Integers outside ±2^53 print exactly here; JS has already rounded them to the
//!   nearest double (and prints `1e+21` style from 10^21 up).
//! * JS escapes lone UTF-16 surrogates as `\udxxx`; Rust strings cannot hold them,
//!   so such values cannot arise here.
//! * Map types whose iteration order is not insertion order (`HashMap`,
//!   `BTreeMap`) serialize in their own order, as they would in any serde format.
//! * JS drops object members whose value is `undefined` or a function; serde has no
//!   such values, but `Option::None` fields print `null` unless marked
//!   `#[serde(skip_serializing_if = "Option::is_none")]`.

use std::borrow::Cow;
use std::io;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::LogError;

/// Turns values into block bytes and back.
pub trait Codec: Send + Sync {
    /// The application value type.
    type Value;
    /// Encodes a value into block bytes.
    fn encode(&self, value: &Self::Value) -> Result<Vec<u8>, LogError>;
    /// Decodes block bytes.
    fn decode(&self, bytes: &[u8]) -> Result<Self::Value, LogError>;
}

/// Bytes as given.
#[derive(Debug, Clone, Copy, Default)]
pub struct Binary;

impl Codec for Binary {
    type Value = Vec<u8>;
    fn encode(&self, value: &Vec<u8>) -> Result<Vec<u8>, LogError> {
        Ok(value.clone())
    }
    fn decode(&self, bytes: &[u8]) -> Result<Vec<u8>, LogError> {
        Ok(bytes.to_vec())
    }
}

/// UTF-8 text.
#[derive(Debug, Clone, Copy, Default)]
pub struct Utf8;

impl Codec for Utf8 {
    type Value = String;
    fn encode(&self, value: &String) -> Result<Vec<u8>, LogError> {
        Ok(value.as_bytes().to_vec())
    }
    fn decode(&self, bytes: &[u8]) -> Result<String, LogError> {
        String::from_utf8(bytes.to_vec()).map_err(|e| LogError::Encoding(e.to_string()))
    }
}

/// JSON as hypercore 8 stores it: compact `JSON.stringify` output plus `\n`.
///
/// ```
/// use kappa_log::encoding::{Codec, Json};
/// let codec = Json::<serde_json::Value>::new();
/// let v = serde_json::json!({"type": "chat/text", "n": 1.0, "big": 1e21});
/// assert_eq!(codec.encode(&v)?, b"{\"type\":\"chat/text\",\"n\":1,\"big\":1e+21}\n");
/// assert_eq!(codec.decode(b"{\"n\":2}\n")?, serde_json::json!({"n": 2}));
/// # Ok::<(), kappa_log::LogError>(())
/// ```
pub struct Json<T>(PhantomData<fn() -> T>);

impl<T> Json<T> {
    /// The codec for `T`.
    pub const fn new() -> Self {
        Json(PhantomData)
    }
}

impl<T> Default for Json<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for Json<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Json<T> {}

impl<T> std::fmt::Debug for Json<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Json")
    }
}

impl<T: Serialize + DeserializeOwned> Codec for Json<T> {
    type Value = T;
    fn encode(&self, value: &T) -> Result<Vec<u8>, LogError> {
        ValueEncoding::Json.encode(value)
    }
    fn decode(&self, bytes: &[u8]) -> Result<T, LogError> {
        serde_json::from_slice(bytes).map_err(|e| LogError::Encoding(e.to_string()))
    }
}

/// The named encodings of hypercore (`valueEncoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ValueEncoding {
    /// Raw bytes.
    #[default]
    Binary,
    /// UTF-8 text.
    Utf8,
    /// JSON plus newline (hypercore's `json`, really `ndjson`).
    Json,
}

impl ValueEncoding {
    /// Encodes `value` into block bytes under this encoding, as a JS writer
    /// would: [`Json`](Self::Json) is [`to_js_json`] plus `\n` (the [`Json`]
    /// codec); [`Binary`](Self::Binary) and [`Utf8`](Self::Utf8) take a string
    /// (its UTF-8 bytes) or an array of bytes (`&[u8]`, `Vec<u8>`), as they are.
    /// Anything else fails with [`LogError::Encoding`].
    ///
    /// ```
    /// use kappa_log::encoding::ValueEncoding;
    /// assert_eq!(ValueEncoding::Json.encode(&serde_json::json!({"n": 1.0}))?, b"{\"n\":1}\n");
    /// assert_eq!(ValueEncoding::Utf8.encode("hé")?, "hé".as_bytes());
    /// assert_eq!(ValueEncoding::Binary.encode(&[1u8, 2])?, [1, 2]);
    /// assert!(ValueEncoding::Binary.encode(&1).is_err());
    /// # Ok::<(), kappa_log::LogError>(())
    /// ```
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>, LogError> {
        match self {
            ValueEncoding::Json => {
                let mut out = to_js_json(value)?;
                out.push(b'\n');
                Ok(out)
            }
            ValueEncoding::Binary | ValueEncoding::Utf8 => {
                match serde_json::to_value(value).map_err(|e| LogError::Encoding(e.to_string()))? {
                    serde_json::Value::String(s) => Ok(s.into_bytes()),
                    serde_json::Value::Array(a) => a
                        .into_iter()
                        .map(|b| b.as_u64().filter(|&n| n < 256).map(|n| n as u8))
                        .collect::<Option<Vec<u8>>>()
                        .ok_or_else(|| LogError::Encoding("expected a string or bytes".into())),
                    _ => Err(LogError::Encoding("binary and utf8 feeds take strings or bytes".into())),
                }
            }
        }
    }

    /// Encodes the value that JSON `text` parses to, as [`encode`](Self::encode)
    /// would encode it: for [`Json`](Self::Json) without building a value tree
    /// ([`js_json_from_str`] plus `\n`). Malformed text fails with
    /// [`LogError::Encoding`].
    ///
    /// ```
    /// use kappa_log::encoding::ValueEncoding;
    /// assert_eq!(ValueEncoding::Json.encode_json_text("{ \"n\": 1.0 }")?, b"{\"n\":1}\n");
    /// assert_eq!(ValueEncoding::Utf8.encode_json_text("\"h\\u00e9\"")?, "hé".as_bytes());
    /// # Ok::<(), kappa_log::LogError>(())
    /// ```
    pub fn encode_json_text(self, text: &str) -> Result<Vec<u8>, LogError> {
        let mut out = Vec::with_capacity(text.len() + 1);
        self.encode_json_text_into(text, &mut out)?;
        Ok(out)
    }

    /// [`encode_json_text`](Self::encode_json_text) appending to `out`; on an
    /// error, `out` is as it was.
    ///
    /// ```
    /// use kappa_log::encoding::ValueEncoding;
    /// let mut blocks = kappa_log::PackedBlocks::new();
    /// for line in ["{\"n\": 1}", "[true]"] {
    ///     blocks.push_with(|out| ValueEncoding::Json.encode_json_text_into(line, out))?;
    /// }
    /// assert_eq!(blocks.iter().collect::<Vec<_>>(), [&b"{\"n\":1}\n"[..], &b"[true]\n"[..]]);
    /// # Ok::<(), kappa_log::LogError>(())
    /// ```
    pub fn encode_json_text_into(self, text: &str, out: &mut Vec<u8>) -> Result<(), LogError> {
        match self {
            ValueEncoding::Json => {
                js_json_into(text, out)?;
                out.push(b'\n');
                Ok(())
            }
            ValueEncoding::Binary | ValueEncoding::Utf8 => {
                let value: serde_json::Value =
                    serde_json::from_str(text).map_err(|e| LogError::Encoding(e.to_string()))?;
                out.extend_from_slice(&self.encode(&value)?);
                Ok(())
            }
        }
    }
}

impl std::str::FromStr for ValueEncoding {
    type Err = LogError;
    fn from_str(s: &str) -> Result<Self, LogError> {
        match s {
            "binary" => Ok(ValueEncoding::Binary),
            "utf8" | "utf-8" => Ok(ValueEncoding::Utf8),
            "json" | "ndjson" => Ok(ValueEncoding::Json),
            other => Err(LogError::Encoding(format!("unknown value encoding {other:?}"))),
        }
    }
}

/// Serializes `value` as `JSON.stringify` would (compact, JS number format), without
/// the trailing newline.
pub fn to_js_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, LogError> {
    let mut out = Vec::with_capacity(64);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, JsFormatter);
    value.serialize(&mut ser).map_err(|e| LogError::Encoding(e.to_string()))?;
    Ok(out)
}

/// Compact JSON with JavaScript's number formatting.
struct JsFormatter;

impl serde_json::ser::Formatter for JsFormatter {
    fn write_f32<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f32) -> io::Result<()> {
        self.write_f64(w, value as f64)
    }

    fn write_f64<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f64) -> io::Result<()> {
        w.write_all(js_number(value).as_bytes())
    }
}

/// `Number.prototype.toString()` for a double, as `JSON.stringify` prints it.
pub fn js_number(value: f64) -> String {
    if !value.is_finite() {
        return "null".into();
    }
    if value == 0.0 {
        return "0".into();
    }
    let mut buf = ryu::Buffer::new();
    let s = buf.format_finite(value.abs());
    // Split ryu's output into significant digits and a decimal exponent n, so that
    // value = 0.d1d2...dk × 10^n.
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], s[i + 1..].parse::<i32>().unwrap_or(0)),
        None => (s, 0),
    };
    let point = mantissa.find('.').unwrap_or(mantissa.len()) as i32;
    let mut digits: Vec<u8> = mantissa.bytes().filter(|b| b.is_ascii_digit()).collect();
    let mut n = point + exp;
    while digits.first() == Some(&b'0') {
        digits.remove(0);
        n -= 1;
    }
    while digits.last() == Some(&b'0') {
        digits.pop();
    }
    let k = digits.len() as i32;
    let digits = String::from_utf8(digits).unwrap_or_default();
    let mut out = String::new();
    if value < 0.0 {
        out.push('-');
    }
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        out.push_str(&digits[..n as usize]);
        out.push('.');
        out.push_str(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(&digits);
    } else {
        let e = n - 1;
        let sign = if e < 0 { '-' } else { '+' };
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(sign);
        out.push_str(&e.abs().to_string());
    }
    out
}

/// Re-encodes JSON text as [`to_js_json`] would encode the value it parses to:
/// `JSON.stringify(JSON.parse(text))` in JS terms, without the trailing newline.
///
/// The result equals `to_js_json(&serde_json::from_str::<serde_json::Value>(text)?)`
/// byte for byte, but no value tree is built: the text is read once and written
/// as it is read, which is what makes `kappa append -` of many lines cheap.
/// Objects that name a key twice (where JS keeps the first position and the
/// last value) take the value-tree path, so they come out as JS writes them too.
///
/// ```
/// use kappa_log::encoding::js_json_from_str;
/// assert_eq!(js_json_from_str(" { \"n\" : 1.0, \"s\": [true, null, \"\\u0041\"] } ")?, br#"{"n":1,"s":[true,null,"A"]}"#);
/// assert_eq!(js_json_from_str(r#"{"a":1,"b":2,"a":3}"#)?, br#"{"a":3,"b":2}"#);
/// assert!(js_json_from_str("{\"a\":").is_err());
/// # Ok::<(), kappa_log::LogError>(())
/// ```
pub fn js_json_from_str(text: &str) -> Result<Vec<u8>, LogError> {
    // One byte to spare: block encodings append a newline.
    let mut out = Vec::with_capacity(text.len() + 1);
    js_json_into(text, &mut out)?;
    Ok(out)
}

/// [`js_json_from_str`] appending to `out` (many blocks encoded into one
/// buffer, as [`PackedBlocks::push_with`](crate::PackedBlocks::push_with)
/// gives). On an error, `out` is as it was.
///
/// ```
/// let mut out = b"[".to_vec();
/// kappa_log::encoding::js_json_into("{ \"a\" : 2.0 }", &mut out)?;
/// assert_eq!(out, br#"[{"a":2}"#);
/// assert!(kappa_log::encoding::js_json_into("[1,", &mut out).is_err());
/// assert_eq!(out, br#"[{"a":2}"#);
/// # Ok::<(), kappa_log::LogError>(())
/// ```
pub fn js_json_into(text: &str, out: &mut Vec<u8>) -> Result<(), LogError> {
    // Most text already is what JS would write (a JS writer's own output, or
    // compact JSON from a tool): then it is its own encoding, once checked.
    if Canonical::check(text.as_bytes()) {
        out.extend_from_slice(text.as_bytes());
        return Ok(());
    }
    let start = out.len();
    let mut de = serde_json::Deserializer::from_str(text);
    let streamed = serde::de::DeserializeSeed::deserialize(Transcode { out: &mut *out }, &mut de)
        .and_then(|()| de.end());
    match streamed {
        Ok(()) => Ok(()),
        // A repeated key, or malformed text: the value-tree path gives JS's result
        // for the first and the parser's own error for the second.
        Err(_) => {
            out.truncate(start);
            let value: serde_json::Value =
                serde_json::from_str(text).map_err(|e| LogError::Encoding(e.to_string()))?;
            out.extend_from_slice(&to_js_json(&value)?);
            Ok(())
        }
    }
}

/// Whether JSON text is already in the form [`to_js_json`] writes for the value
/// it parses to: valid, compact, with no repeated key, strings escaped as JS
/// escapes them and numbers as short integers. Anything it is unsure of is
/// "no", and takes the slower paths, which decide.
struct Canonical<'a> {
    text: &'a [u8],
    at: usize,
    depth: usize,
    /// The keys of the objects being read, innermost last, as byte ranges.
    keys: Vec<(usize, usize)>,
}

/// Nesting deeper than this is left to the parser (and its recursion limit).
const CANONICAL_MAX_DEPTH: usize = 100;

impl<'a> Canonical<'a> {
    fn check(text: &'a [u8]) -> bool {
        let mut c = Canonical { text, at: 0, depth: 0, keys: Vec::new() };
        c.value().is_some() && c.at == text.len()
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek()? == b).then(|| self.at += 1)
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at.checked_add(word.len())?;
        (self.text.get(self.at..end)? == word).then(|| self.at = end)
    }

    fn value(&mut self) -> Option<()> {
        match self.peek()? {
            b'{' => self.object(),
            b'[' => self.array(),
            b'"' => self.string().map(|_| ()),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn nest(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= CANONICAL_MAX_DEPTH).then_some(())
    }

    fn array(&mut self) -> Option<()> {
        self.at += 1;
        self.nest()?;
        if self.eat(b']').is_none() {
            loop {
                self.value()?;
                if self.eat(b',').is_none() {
                    self.eat(b']')?;
                    break;
                }
            }
        }
        self.depth -= 1;
        Some(())
    }

    fn object(&mut self) -> Option<()> {
        self.at += 1;
        self.nest()?;
        let first = self.keys.len();
        if self.eat(b'}').is_none() {
            loop {
                let (start, end) = self.string()?;
                let key = &self.text[start..end];
                // Escapes here have one spelling each, so equal keys are equal bytes.
                if self.keys.len() - first >= TRANSCODE_MAX_KEYS
                    || self.keys[first..].iter().any(|&(s, e)| &self.text[s..e] == key)
                {
                    return None;
                }
                self.keys.push((start, end));
                self.eat(b':')?;
                self.value()?;
                if self.eat(b',').is_none() {
                    self.eat(b'}')?;
                    break;
                }
            }
        }
        self.keys.truncate(first);
        self.depth -= 1;
        Some(())
    }

    /// A string whose escapes are the ones JS writes (`\"`, `\\` and the
    /// short forms; no `\u`); the range of its contents.
    fn string(&mut self) -> Option<(usize, usize)> {
        self.eat(b'"')?;
        let start = self.at;
        loop {
            match self.peek()? {
                b'"' => break,
                b'\\' => match self.text.get(self.at + 1)? {
                    b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't' => self.at += 2,
                    _ => return None,
                },
                0..=0x1f => return None,
                _ => self.at += 1,
            }
        }
        let end = self.at;
        self.at += 1;
        Some((start, end))
    }

    /// An integer of at most 15 digits (so exact in a double too), without a
    /// leading zero and not `-0`.
    fn number(&mut self) -> Option<()> {
        let negative = self.eat(b'-').is_some();
        let start = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        let digits = &self.text[start..self.at];
        let plain = match digits {
            [] => false,
            [b'0'] => !negative,
            [b'0', ..] => false,
            _ => digits.len() <= 15,
        };
        (plain && !matches!(self.peek(), Some(b'.' | b'e' | b'E'))).then_some(())
    }
}

/// Objects with more keys than this take the value-tree path in [`js_json_from_str`].
const TRANSCODE_MAX_KEYS: usize = 64;

/// An object key, borrowed from the text when it has no escapes.
struct Key;

impl<'de> serde::de::DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Key {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

/// Writes what it deserializes as compact JS JSON (see [`js_json_from_str`]).
struct Transcode<'a> {
    out: &'a mut Vec<u8>,
}

impl Transcode<'_> {
    fn string(&mut self, s: &str) {
        // serde_json's compact string escaping is JsFormatter's (it only changes floats).
        // Writing to a Vec cannot fail.
        let _ = serde::Serializer::serialize_str(&mut serde_json::Serializer::new(&mut *self.out), s);
    }

    fn display(&mut self, v: impl std::fmt::Display) {
        use std::io::Write as _;
        let _ = write!(self.out, "{v}");
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Transcode<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Transcode<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.out.extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }
    fn visit_i64<E>(mut self, v: i64) -> Result<(), E> {
        self.display(v);
        Ok(())
    }
    fn visit_u64<E>(mut self, v: u64) -> Result<(), E> {
        self.display(v);
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.out.extend_from_slice(js_number(v).as_bytes());
        Ok(())
    }
    fn visit_str<E>(mut self, v: &str) -> Result<(), E> {
        self.string(v);
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.out.push(b'[');
        let mut first = true;
        loop {
            let mark = self.out.len();
            if !first {
                self.out.push(b',');
            }
            if seq.next_element_seed(Transcode { out: &mut *self.out })?.is_none() {
                self.out.truncate(mark);
                break;
            }
            first = false;
        }
        self.out.push(b']');
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        self.out.push(b'{');
        let mut keys: Vec<Cow<'de, str>> = Vec::new();
        while let Some(key) = map.next_key_seed(Key)? {
            // Repeated keys take the value-tree path; so do large objects, where
            // looking for repeats by scanning would cost more than the tree.
            if keys.len() >= TRANSCODE_MAX_KEYS || keys.contains(&key) {
                return Err(serde::de::Error::custom("repeated key or large object"));
            }
            if !keys.is_empty() {
                self.out.push(b',');
            }
            self.string(&key);
            self.out.push(b':');
            keys.push(key);
            map.next_value_seed(Transcode { out: &mut *self.out })?;
        }
        self.out.push(b'}');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_like_javascript() {
        let cases: &[(f64, &str)] = &[
            (1.0, "1"),
            (-1.5, "-1.5"),
            (0.1, "0.1"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (123456789012345680000.0, "123456789012345680000"),
            (1e-6, "0.000001"),
            (1e-7, "1e-7"),
            (1.5e-7, "1.5e-7"),
            (-0.0, "0"),
            (f64::NAN, "null"),
            (f64::INFINITY, "null"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (0.000123, "0.000123"),
            (123.456, "123.456"),
            (2.5e25, "2.5e+25"),
        ];
        for (v, want) in cases {
            assert_eq!(js_number(*v), *want, "{v:e}");
        }
    }

    #[test]
    fn strings_like_javascript() {
        let v = serde_json::json!({"s": "a\"b\\c\n\u{1}\u{7f}é😀", "x": [1, 2.0, null, true]});
        let out = String::from_utf8(to_js_json(&v).unwrap()).unwrap();
        assert_eq!(out, "{\"s\":\"a\\\"b\\\\c\\n\\u0001\u{7f}é😀\",\"x\":[1,2,null,true]}");
    }
}
