//! JSON for the plugin, on `serde_json`: method arguments and responses,
//! push payloads and stored records.
//!
//! Contract:
//! - [`parse`] accepts RFC 8259 JSON as `serde_json` does (its recursion
//!   limit of 128 nested arrays/objects holds against hostile input) and,
//!   as I-JSON (RFC 7493 §2.3, required by RFC 8620 §3.1), MUST refuse an
//!   object that gives a member name twice, naming it, instead of silently
//!   keeping one of the values.
//! - Numbers are `serde_json`'s: 64-bit integers exactly, other numbers as
//!   IEEE doubles; a number beyond a double's range (`1e400`) is refused,
//!   as I-JSON (RFC 7493 §2.2) allows. The plugin's own numbers are
//!   unsigned integers.
//! - Objects are [`Map`]s ordered by key (`serde_json` without
//!   `preserve_order`), so a [`Value`]'s text is the same for equal values.
//! - Stored records are `serde` structs read and written with
//!   [`from_record`] and [`to_record`]; their errors are [`RecordError`]s.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
pub use serde_json::{Map, Value};

/// Why a text is not acceptable JSON: a syntax error or a duplicated
/// member name, with `serde_json`'s line and column.
#[derive(Debug)]
pub struct ParseError(serde_json::Error);

impl ParseError {
    /// The line (1-based) where the problem was found.
    pub fn line(&self) -> usize {
        self.0.line()
    }

    /// The column (1-based) where the problem was found.
    pub fn column(&self) -> usize {
        self.0.column()
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ParseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Parses a JSON text (see the module docs: duplicated member names are
/// refused).
///
/// # Errors
/// [`ParseError`] for a syntax error, a nesting deeper than 128 or a
/// duplicated member name.
pub fn parse(text: &str) -> Result<Value, ParseError> {
    serde_json::from_str::<Strict>(text)
        .map(|s| s.0)
        .map_err(ParseError)
}

/// [`parse`] of UTF-8 octets.
///
/// # Errors
/// As [`parse`], and for octets that are not UTF-8.
pub fn parse_slice(bytes: &[u8]) -> Result<Value, ParseError> {
    serde_json::from_slice::<Strict>(bytes)
        .map(|s| s.0)
        .map_err(ParseError)
}

/// A [`Value`] deserialized with duplicated member names refused.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // JSON text has no NaN or infinity; `from_f64` only refuses those.
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if out.contains_key(&name) {
                return Err(de::Error::custom(format_args!(
                    "member name {:?} given twice (I-JSON, RFC 7493 §2.3)",
                    name.chars().take(64).collect::<String>()
                )));
            }
            let Strict(v) = map.next_value()?;
            out.insert(name, v);
        }
        Ok(Value::Object(out))
    }
}

/// An object from `(name, value)` pairs.
pub fn object<const N: usize>(members: [(&str, Value); N]) -> Value {
    Value::Object(
        members
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    )
}

/// Why a stored record could not be read back (`serde_json`'s message
/// names the member and what was wrong).
#[derive(Debug)]
pub struct RecordError(serde_json::Error);

impl RecordError {
    /// Whether the text is not JSON at all (as opposed to JSON of the wrong
    /// shape).
    pub fn is_syntax(&self) -> bool {
        matches!(
            self.0.classify(),
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof
        )
    }
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for RecordError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Reads a stored record.
///
/// # Errors
/// [`RecordError`] when the octets are not the JSON of a `T`.
pub fn from_record<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, RecordError> {
    serde_json::from_slice(bytes).map_err(RecordError)
}

/// The JSON text of a stored record (members in the struct's declaration
/// order).
pub fn to_record<T: serde::Serialize>(record: &T) -> Vec<u8> {
    // Records are plain structs of strings, integers and maps with string
    // keys: serializing them cannot fail.
    serde_json::to_vec(record).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duplicated_member_name_is_refused_at_any_depth() {
        for text in [
            r#"{"a":1,"a":1}"#,
            r#"{"a":1,"b":2,"a":3}"#,
            r#"{"x":[{"k":"v","k":"w"}]}"#,
            r#"{"o":{"p":{"q":1,"q":null}}}"#,
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.to_string().contains("given twice"), "{text}: {e}");
        }
        // The same name in different objects is fine.
        let v = parse(r#"{"a":{"a":1},"b":[{"a":2},{"a":3}]}"#).unwrap();
        assert_eq!(v["b"][1]["a"], 3);
    }

    #[test]
    fn syntax_errors_and_deep_nesting_are_refused() {
        for text in [
            "",
            "{",
            "{\"a\":}",
            "[1,]",
            "{\"a\":1,}",
            "01",
            "\"\\u12\"",
            "nul",
            "{} x",
            "\"\u{1}\"",
            "//c\n{}",
            "NaN",
        ] {
            assert!(parse(text).is_err(), "{text:?}");
        }
        assert!(parse("1e400")
            .unwrap_err()
            .to_string()
            .contains("out of range"));
        assert_eq!(parse("1.5e3").unwrap().as_f64(), Some(1500.0));
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(parse(&deep).is_err());
        let ok = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(parse(&ok).is_ok());
        assert!(parse_slice(b"\xff").is_err());
    }

    #[test]
    fn values_parse_and_print_compactly_with_sorted_keys() {
        let v = parse(r#" { "b" : [true, null, -1, 18446744073709551615, "\u00e9\n"], "a": {} } "#)
            .unwrap();
        assert_eq!(
            v.to_string(),
            r#"{"a":{},"b":[true,null,-1,18446744073709551615,"é\n"]}"#
        );
        assert_eq!(
            object([("z", 1u64.into()), ("y", "s".into())]).to_string(),
            r#"{"y":"s","z":1}"#
        );
    }
}
