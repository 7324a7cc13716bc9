//! A small JSON (RFC 8259) value type with a strict parser and a compact
//! serializer: what the plugin needs of JSON, without `serde`.
//!
//! Why not `serde_json`: it and the float parsing and formatting it brings
//! made up about a fifth of the component (BENCHMARKS.md, session 4). The
//! plugin never needs floating point: JMAP ids, states and dates are strings
//! and its counters are unsigned integers, so numbers are kept as integers
//! when they are integers and as their validated source text otherwise.
//!
//! Contract:
//! - [`parse`] accepts exactly the RFC 8259 grammar (no comments, no
//!   trailing commas, no leading zeros, no control characters or lone
//!   surrogates in strings, nothing after the value but whitespace) and
//!   MUST NOT recurse deeper than [`MAX_DEPTH`] nested arrays/objects, so
//!   hostile input cannot exhaust the stack. A member name given twice keeps
//!   the last value (as `serde_json` does).
//! - Objects are [`Map`]s ordered by key, so a [`Value`]'s text is the same
//!   for equal values.
//! - Serialization escapes `"`, `\` and control characters only, like
//!   `serde_json`, and never fails.

use std::collections::BTreeMap;
use std::fmt;

/// A JSON object: member names to values, ordered by name.
pub type Map<K = String, V = Value> = BTreeMap<K, V>;

/// The deepest nesting of arrays and objects [`parse`] accepts.
pub const MAX_DEPTH: usize = 128;

/// A JSON value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Value {
    /// `null`
    #[default]
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A number.
    Number(Number),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<Value>),
    /// An object.
    Object(Map<String, Value>),
}

/// A JSON number: an integer when it is one that fits 64 bits, otherwise its
/// (validated) source text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Number(Repr);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Repr {
    Unsigned(u64),
    Negative(i64),
    Text(Box<str>),
}

impl Number {
    /// The value as `u64`, if it is a non-negative integer that fits.
    pub fn as_u64(&self) -> Option<u64> {
        match self.0 {
            Repr::Unsigned(n) => Some(n),
            _ => None,
        }
    }

    /// The value as `i64`, if it is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match self.0 {
            Repr::Unsigned(n) => i64::try_from(n).ok(),
            Repr::Negative(n) => Some(n),
            Repr::Text(_) => None,
        }
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Unsigned(n) => write!(f, "{n}"),
            Repr::Negative(n) => write!(f, "{n}"),
            Repr::Text(t) => f.write_str(t),
        }
    }
}

impl Value {
    /// The member `key` of an object (`None` for other values).
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(m) => m.get(key),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The number as `u64`, if this is a non-negative integer that fits.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Number(n) => n.as_u64(),
            _ => None,
        }
    }

    /// The number as `i64`, if this is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Number(n) => n.as_i64(),
            _ => None,
        }
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The elements, if this is an array.
    pub fn as_array(&self) -> Option<&Vec<Value>> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The members, if this is an object.
    pub fn as_object(&self) -> Option<&Map<String, Value>> {
        match self {
            Value::Object(m) => Some(m),
            _ => None,
        }
    }

    /// Whether this is `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Appends the compact JSON text of the value to `out`.
    pub fn write_to(&self, out: &mut String) {
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(true) => out.push_str("true"),
            Value::Bool(false) => out.push_str("false"),
            Value::Number(n) => match &n.0 {
                Repr::Unsigned(v) => push_u64(out, *v),
                Repr::Negative(v) => {
                    out.push('-');
                    push_u64(out, v.unsigned_abs());
                }
                Repr::Text(t) => out.push_str(t),
            },
            Value::String(s) => write_str(out, s),
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write_to(out);
                }
                out.push(']');
            }
            Value::Object(m) => {
                out.push('{');
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_str(out, k);
                    out.push(':');
                    v.write_to(out);
                }
                out.push('}');
            }
        }
    }

    /// The compact JSON text of the value.
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        self.write_to(&mut out);
        out
    }
}

impl fmt::Display for Value {
    /// Compact JSON text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}

impl From<&String> for Value {
    fn from(s: &String) -> Self {
        Value::String(s.clone())
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Self {
        Value::Number(Number(Repr::Unsigned(n)))
    }
}

impl From<u32> for Value {
    fn from(n: u32) -> Self {
        Value::from(u64::from(n))
    }
}

impl From<usize> for Value {
    fn from(n: usize) -> Self {
        Value::from(n as u64)
    }
}

impl From<Vec<Value>> for Value {
    fn from(items: Vec<Value>) -> Self {
        Value::Array(items)
    }
}

impl From<Vec<String>> for Value {
    fn from(items: Vec<String>) -> Self {
        Value::Array(items.into_iter().map(Value::String).collect())
    }
}

impl From<Map<String, Value>> for Value {
    fn from(m: Map<String, Value>) -> Self {
        Value::Object(m)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// An object built from `(name, value)` pairs (a later pair with the same
/// name replaces an earlier one).
pub fn object<const N: usize>(members: [(&str, Value); N]) -> Value {
    // Inserts, not `collect()`, which would instantiate a sort.
    let mut m = Map::new();
    for (k, v) in members {
        m.insert(k.to_string(), v);
    }
    Value::Object(m)
}

fn push_u64(out: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // ASCII digits: one append, not one per digit.
    out.push_str(std::str::from_utf8(&buf[i..]).unwrap_or("0"));
}

/// Appends `s` as a JSON string literal (quoted, escaped) to `out`.
pub fn write_str(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        // Every byte escaped is ASCII, so these slices are on char boundaries.
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        } else {
            out.push_str(esc);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Writes a JSON object member by member, in the order given (for stored
/// records, whose text keeps their fields' declaration order).
pub struct ObjectWriter {
    out: String,
    empty: bool,
}

impl Default for ObjectWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl ObjectWriter {
    /// An empty object.
    pub fn new() -> Self {
        ObjectWriter {
            out: String::from("{"),
            empty: true,
        }
    }

    fn name(&mut self, name: &str) -> &mut String {
        if !self.empty {
            self.out.push(',');
        }
        self.empty = false;
        write_str(&mut self.out, name);
        self.out.push(':');
        &mut self.out
    }

    /// Adds a string member.
    pub fn str(mut self, name: &str, value: &str) -> Self {
        write_str(self.name(name), value);
        self
    }

    /// Adds a string member, or `null`.
    pub fn opt_str(mut self, name: &str, value: Option<&str>) -> Self {
        match value {
            Some(v) => write_str(self.name(name), v),
            None => self.name(name).push_str("null"),
        }
        self
    }

    /// Adds an unsigned integer member.
    pub fn u64(mut self, name: &str, value: u64) -> Self {
        push_u64(self.name(name), value);
        self
    }

    /// Adds an unsigned integer member, or `null`.
    pub fn opt_u64(mut self, name: &str, value: Option<u64>) -> Self {
        match value {
            Some(v) => push_u64(self.name(name), v),
            None => self.name(name).push_str("null"),
        }
        self
    }

    /// Adds a boolean member.
    pub fn bool(mut self, name: &str, value: bool) -> Self {
        self.name(name)
            .push_str(if value { "true" } else { "false" });
        self
    }

    /// Adds a member whose value is already JSON text (from
    /// [`ObjectWriter::finish`] or [`Value::to_json`]).
    pub fn raw(mut self, name: &str, json: &str) -> Self {
        self.name(name).push_str(json);
        self
    }

    /// Adds a member holding `value`.
    pub fn value(mut self, name: &str, value: &Value) -> Self {
        value.write_to(self.name(name));
        self
    }

    /// The object's JSON text.
    pub fn finish(mut self) -> String {
        self.out.push('}');
        self.out
    }
}

/// Why a text is not JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseErrorKind {
    /// The text is not UTF-8.
    NotUtf8,
    /// The text ended inside a value.
    UnexpectedEnd,
    /// A character that cannot start or continue a value here.
    UnexpectedCharacter(char),
    /// A string contains a control character (U+0000-U+001F) unescaped.
    ControlCharacterInString,
    /// A backslash escape other than the nine of RFC 8259.
    InvalidEscape,
    /// A `\u` escape is a lone or reversed UTF-16 surrogate.
    LoneSurrogate,
    /// A number does not follow the grammar (leading zero, missing digits).
    InvalidNumber,
    /// Arrays/objects nest deeper than [`MAX_DEPTH`].
    TooDeep,
    /// Something follows the value.
    TrailingCharacters,
}

/// A parse failure and where it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// What is wrong.
    pub kind: ParseErrorKind,
    /// 1-based line of the fault.
    pub line: usize,
    /// 1-based column (in octets) of the fault.
    pub column: usize,
}

impl fmt::Display for ParseErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseErrorKind::NotUtf8 => f.write_str("the text is not UTF-8"),
            ParseErrorKind::UnexpectedEnd => f.write_str("unexpected end of the text"),
            ParseErrorKind::UnexpectedCharacter(c) => write!(f, "unexpected character {c:?}"),
            ParseErrorKind::ControlCharacterInString => {
                f.write_str("unescaped control character in a string")
            }
            ParseErrorKind::InvalidEscape => f.write_str("invalid escape in a string"),
            ParseErrorKind::LoneSurrogate => f.write_str("lone UTF-16 surrogate in a \\u escape"),
            ParseErrorKind::InvalidNumber => f.write_str("invalid number"),
            ParseErrorKind::TooDeep => {
                write!(f, "arrays and objects nest deeper than {MAX_DEPTH}")
            }
            ParseErrorKind::TrailingCharacters => {
                f.write_str("trailing characters after the value")
            }
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at line {} column {}",
            self.kind, self.line, self.column
        )
    }
}

impl std::error::Error for ParseError {}

/// Parses one JSON text.
pub fn parse(text: &str) -> Result<Value, ParseError> {
    let mut p = Parser {
        text,
        bytes: text.as_bytes(),
        pos: 0,
        depth: 0,
    };
    p.skip_ws();
    let v = p.value()?;
    p.skip_ws();
    if p.pos < p.bytes.len() {
        return Err(p.error(ParseErrorKind::TrailingCharacters));
    }
    Ok(v)
}

/// Parses one JSON text given as octets (which MUST be UTF-8).
pub fn parse_slice(bytes: &[u8]) -> Result<Value, ParseError> {
    parse(text_of(bytes)?)
}

/// The octets as text, or where they stop being UTF-8.
fn text_of(bytes: &[u8]) -> Result<&str, ParseError> {
    std::str::from_utf8(bytes)
        .map_err(|e| error_at(bytes, e.valid_up_to(), ParseErrorKind::NotUtf8))
}

/// `kind` at octet `pos` of `bytes`, with its 1-based line and column.
fn error_at(bytes: &[u8], pos: usize, kind: ParseErrorKind) -> ParseError {
    let before = &bytes[..pos.min(bytes.len())];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    ParseError {
        kind,
        line: 1 + before.iter().filter(|&&b| b == b'\n').count(),
        column: 1 + before.len() - line_start,
    }
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn error(&self, kind: ParseErrorKind) -> ParseError {
        error_at(self.bytes, self.pos, kind)
    }

    fn unexpected(&self) -> ParseError {
        match self.text.get(self.pos..).and_then(|s| s.chars().next()) {
            Some(c) => self.error(ParseErrorKind::UnexpectedCharacter(c)),
            None => self.error(ParseErrorKind::UnexpectedEnd),
        }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    /// Consumes `word` (`null`, `true`, `false`).
    fn literal(&mut self, word: &str) -> Result<(), ParseError> {
        for &expected in word.as_bytes() {
            match self.bytes.get(self.pos) {
                Some(&b) if b == expected => self.pos += 1,
                _ => return Err(self.unexpected()),
            }
        }
        Ok(())
    }

    fn value(&mut self) -> Result<Value, ParseError> {
        match self.bytes.get(self.pos) {
            None => Err(self.error(ParseErrorKind::UnexpectedEnd)),
            Some(b'n') => self.literal("null").map(|()| Value::Null),
            Some(b't') => self.literal("true").map(|()| Value::Bool(true)),
            Some(b'f') => self.literal("false").map(|()| Value::Bool(false)),
            Some(b'"') => self.string().map(Value::String),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'[') => {
                self.enter()?;
                let mut items = Vec::new();
                if !self.closes(b']') {
                    loop {
                        self.skip_ws();
                        items.push(self.value()?);
                        if self.after_item(b']')? {
                            break;
                        }
                    }
                }
                self.depth -= 1;
                Ok(Value::Array(items))
            }
            Some(b'{') => {
                self.enter()?;
                let mut m = Map::new();
                if !self.closes(b'}') {
                    loop {
                        let key = self.member_name()?.into_owned();
                        let v = self.value()?;
                        m.insert(key, v);
                        if self.after_item(b'}')? {
                            break;
                        }
                    }
                }
                self.depth -= 1;
                Ok(Value::Object(m))
            }
            Some(_) => Err(self.unexpected()),
        }
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error(ParseErrorKind::TooDeep));
        }
        self.depth += 1;
        self.pos += 1;
        Ok(())
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<Value, ParseError> {
        let start = self.pos;
        let negative = self.bytes.get(self.pos) == Some(&b'-');
        if negative {
            self.pos += 1;
        }
        let int_start = self.pos;
        match self.digits() {
            0 => return Err(self.error(ParseErrorKind::InvalidNumber)),
            n if n > 1 && self.bytes[int_start] == b'0' => {
                self.pos = int_start + 1;
                return Err(self.error(ParseErrorKind::InvalidNumber));
            }
            _ => {}
        }
        let mut integer = true;
        if self.bytes.get(self.pos) == Some(&b'.') {
            integer = false;
            self.pos += 1;
            if self.digits() == 0 {
                return Err(self.error(ParseErrorKind::InvalidNumber));
            }
        }
        if let Some(b'e' | b'E') = self.bytes.get(self.pos) {
            integer = false;
            self.pos += 1;
            if let Some(b'+' | b'-') = self.bytes.get(self.pos) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.error(ParseErrorKind::InvalidNumber));
            }
        }
        let text = &self.text[start..self.pos];
        let repr = if integer {
            let magnitude = text[usize::from(negative)..].parse::<u64>().ok();
            match (negative, magnitude) {
                (false, Some(n)) => Repr::Unsigned(n),
                // "-0" is no u64 and no i64 either: kept as text.
                (true, Some(0)) => Repr::Text(text.into()),
                (true, Some(n)) if n <= 1u64 << 63 => Repr::Negative((n as i64).wrapping_neg()),
                _ => Repr::Text(text.into()),
            }
        } else {
            Repr::Text(text.into())
        };
        Ok(Value::Number(Number(repr)))
    }

    fn hex4(&mut self) -> Result<u32, ParseError> {
        let mut v = 0u32;
        for _ in 0..4 {
            let d = match self.bytes.get(self.pos) {
                Some(&b @ b'0'..=b'9') => b - b'0',
                Some(&b @ b'a'..=b'f') => b - b'a' + 10,
                Some(&b @ b'A'..=b'F') => b - b'A' + 10,
                Some(_) => return Err(self.error(ParseErrorKind::InvalidEscape)),
                None => return Err(self.error(ParseErrorKind::UnexpectedEnd)),
            };
            v = v * 16 + u32::from(d);
            self.pos += 1;
        }
        Ok(v)
    }

    /// Whether `close` follows (after whitespace); consumes it if so.
    fn closes(&mut self, close: u8) -> bool {
        self.skip_ws();
        let closed = self.bytes.get(self.pos) == Some(&close);
        if closed {
            self.pos += 1;
        }
        closed
    }

    /// After an element: `,` (more follow: `false`) or `close` (the end:
    /// `true`), whitespace before.
    fn after_item(&mut self, close: u8) -> Result<bool, ParseError> {
        if self.closes(close) {
            return Ok(true);
        }
        if self.bytes.get(self.pos) != Some(&b',') {
            return Err(self.unexpected());
        }
        self.pos += 1;
        Ok(false)
    }

    /// A member's `"name" :` with whitespace around; the name is borrowed
    /// from the text when it has no escapes.
    fn member_name(&mut self) -> Result<std::borrow::Cow<'a, str>, ParseError> {
        self.skip_ws();
        if self.bytes.get(self.pos) != Some(&b'"') {
            return Err(self.unexpected());
        }
        let start = self.pos + 1;
        let mut end = None;
        for (i, &b) in self.bytes.iter().enumerate().skip(start) {
            match b {
                b'"' => {
                    end = Some(i);
                    break;
                }
                b'\\' | 0..=0x1f => break,
                _ => {}
            }
        }
        let name = match end {
            Some(i) => {
                self.pos = i + 1;
                std::borrow::Cow::Borrowed(&self.text[start..i])
            }
            None => std::borrow::Cow::Owned(self.string()?),
        };
        self.skip_ws();
        if self.bytes.get(self.pos) != Some(&b':') {
            return Err(self.unexpected());
        }
        self.pos += 1;
        self.skip_ws();
        Ok(name)
    }

    /// Parses a string; `pos` is at its opening quote.
    fn string(&mut self) -> Result<String, ParseError> {
        self.pos += 1;
        let mut out = String::new();
        let mut start = self.pos;
        loop {
            match self.bytes.get(self.pos) {
                None => return Err(self.error(ParseErrorKind::UnexpectedEnd)),
                Some(b'"') => {
                    out.push_str(&self.text[start..self.pos]);
                    self.pos += 1;
                    return Ok(out);
                }
                Some(0..=0x1f) => return Err(self.error(ParseErrorKind::ControlCharacterInString)),
                Some(b'\\') => {
                    out.push_str(&self.text[start..self.pos]);
                    self.pos += 1;
                    let c = match self.bytes.get(self.pos) {
                        None => return Err(self.error(ParseErrorKind::UnexpectedEnd)),
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.pos += 1;
                            let at = self.pos;
                            let hi = self.hex4()?;
                            let code = match hi {
                                0xD800..=0xDBFF => {
                                    if self.bytes.get(self.pos) != Some(&b'\\')
                                        || self.bytes.get(self.pos + 1) != Some(&b'u')
                                    {
                                        self.pos = at;
                                        return Err(self.error(ParseErrorKind::LoneSurrogate));
                                    }
                                    self.pos += 2;
                                    let lo = self.hex4()?;
                                    if !(0xDC00..=0xDFFF).contains(&lo) {
                                        self.pos = at;
                                        return Err(self.error(ParseErrorKind::LoneSurrogate));
                                    }
                                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                                }
                                0xDC00..=0xDFFF => {
                                    self.pos = at;
                                    return Err(self.error(ParseErrorKind::LoneSurrogate));
                                }
                                c => c,
                            };
                            // Surrogates were excluded above, so this is a scalar value.
                            let c = char::from_u32(code)
                                .ok_or_else(|| self.error(ParseErrorKind::LoneSurrogate))?;
                            out.push(c);
                            start = self.pos;
                            continue;
                        }
                        Some(_) => return Err(self.error(ParseErrorKind::InvalidEscape)),
                    };
                    out.push(c);
                    self.pos += 1;
                    start = self.pos;
                }
                Some(_) => self.pos += 1,
            }
        }
    }
}

/// Why a stored record could not be read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// The text is not JSON.
    Syntax(ParseError),
    /// The JSON is not an object.
    NotAnObject,
    /// A required member is missing.
    Missing(&'static str),
    /// A member has the wrong type.
    WrongType(&'static str),
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Syntax(e) => write!(f, "{e}"),
            RecordError::NotAnObject => f.write_str("the record is not a JSON object"),
            RecordError::Missing(name) => write!(f, "missing field `{name}`"),
            RecordError::WrongType(name) => write!(f, "field `{name}` has the wrong type"),
        }
    }
}

impl std::error::Error for RecordError {}

/// Reads a stored record (a JSON object) member by member, straight into
/// the caller's variables, without building a [`Map`]: records are read on
/// every push, and the maps and keys a [`Value`] would allocate were most
/// of that cost.
///
/// The rules are those of the records' original `serde` form: the caller
/// decides what is required; a `null` optional member is `None`; unknown
/// members are skipped (and still checked for syntax); a member given twice
/// keeps the last value.
pub struct RecordReader<'a> {
    p: Parser<'a>,
}

/// What a record reader calls for each member: its name and the reader,
/// which MUST then consume the member's value (a typed read or
/// [`RecordReader::skip`]).
pub type OnMember<'f, 'a> = dyn FnMut(&str, &mut RecordReader<'a>) -> Result<(), RecordError> + 'f;

impl<'a> RecordReader<'a> {
    /// Reads the record in `bytes` (an object, nothing after it).
    pub fn read(bytes: &'a [u8], on_member: &mut OnMember<'_, 'a>) -> Result<(), RecordError> {
        let text = text_of(bytes).map_err(RecordError::Syntax)?;
        let mut r = RecordReader {
            p: Parser {
                text,
                bytes: text.as_bytes(),
                pos: 0,
                depth: 0,
            },
        };
        r.p.skip_ws();
        if r.peek() != Some(b'{') {
            // Tell "valid JSON but not an object" from a syntax error.
            return Err(match parse(text) {
                Ok(_) => RecordError::NotAnObject,
                Err(e) => RecordError::Syntax(e),
            });
        }
        r.members(on_member)?;
        r.p.skip_ws();
        if r.p.pos < r.p.bytes.len() {
            return Err(RecordError::Syntax(
                r.p.error(ParseErrorKind::TrailingCharacters),
            ));
        }
        Ok(())
    }

    fn peek(&self) -> Option<u8> {
        self.p.bytes.get(self.p.pos).copied()
    }

    /// The members of the object at the reader's position.
    fn members(&mut self, on_member: &mut OnMember<'_, 'a>) -> Result<(), RecordError> {
        self.p.enter().map_err(RecordError::Syntax)?;
        if !self.p.closes(b'}') {
            loop {
                let name = self.p.member_name().map_err(RecordError::Syntax)?;
                on_member(&name, self)?;
                if self.p.after_item(b'}').map_err(RecordError::Syntax)? {
                    break;
                }
            }
        }
        self.p.depth -= 1;
        Ok(())
    }

    /// A nested object member, member by member.
    pub fn object(
        &mut self,
        name: &'static str,
        on_member: &mut OnMember<'_, 'a>,
    ) -> Result<(), RecordError> {
        if self.peek() != Some(b'{') {
            return Err(RecordError::WrongType(name));
        }
        self.members(on_member)
    }

    /// Consumes a `null` and says so; leaves any other value unread.
    pub fn null(&mut self) -> Result<bool, RecordError> {
        if self.peek() != Some(b'n') {
            return Ok(false);
        }
        self.p.literal("null").map_err(RecordError::Syntax)?;
        Ok(true)
    }

    /// A string member.
    pub fn string(&mut self, name: &'static str) -> Result<String, RecordError> {
        if self.peek() != Some(b'"') {
            return Err(RecordError::WrongType(name));
        }
        self.p.string().map_err(RecordError::Syntax)
    }

    /// A string member, or `null`.
    pub fn opt_string(&mut self, name: &'static str) -> Result<Option<String>, RecordError> {
        if self.null()? {
            return Ok(None);
        }
        self.string(name).map(Some)
    }

    /// An unsigned integer member.
    pub fn u64(&mut self, name: &'static str) -> Result<u64, RecordError> {
        if !matches!(self.peek(), Some(b'-' | b'0'..=b'9')) {
            return Err(RecordError::WrongType(name));
        }
        self.p
            .number()
            .map_err(RecordError::Syntax)?
            .as_u64()
            .ok_or(RecordError::WrongType(name))
    }

    /// An unsigned integer member, or `null`.
    pub fn opt_u64(&mut self, name: &'static str) -> Result<Option<u64>, RecordError> {
        if self.null()? {
            return Ok(None);
        }
        self.u64(name).map(Some)
    }

    /// A `u32` member.
    pub fn u32(&mut self, name: &'static str) -> Result<u32, RecordError> {
        u32::try_from(self.u64(name)?).map_err(|_| RecordError::WrongType(name))
    }

    /// A boolean member.
    pub fn bool(&mut self, name: &'static str) -> Result<bool, RecordError> {
        let value = match self.peek() {
            Some(b't') => true,
            Some(b'f') => false,
            _ => return Err(RecordError::WrongType(name)),
        };
        let word = if value { "true" } else { "false" };
        self.p.literal(word).map_err(RecordError::Syntax)?;
        Ok(value)
    }

    /// An array of strings member, or `null`.
    pub fn opt_strings(&mut self, name: &'static str) -> Result<Option<Vec<String>>, RecordError> {
        if self.null()? {
            return Ok(None);
        }
        if self.peek() != Some(b'[') {
            return Err(RecordError::WrongType(name));
        }
        self.p.pos += 1;
        let mut items = Vec::new();
        if !self.p.closes(b']') {
            loop {
                self.p.skip_ws();
                items.push(self.string(name)?);
                if self.p.after_item(b']').map_err(RecordError::Syntax)? {
                    break;
                }
            }
        }
        Ok(Some(items))
    }

    /// Consumes a member's value whatever it is (checking its syntax).
    pub fn skip(&mut self) -> Result<(), RecordError> {
        self.p.value().map(drop).map_err(RecordError::Syntax)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Texts both parsers accept, with the compact form of each.
    const VALID: &[(&str, &str)] = &[
        ("null", "null"),
        (" true ", "true"),
        ("false", "false"),
        ("0", "0"),
        ("-0", "-0"),
        ("42", "42"),
        ("-42", "-42"),
        ("18446744073709551615", "18446744073709551615"),
        ("-9223372036854775808", "-9223372036854775808"),
        ("\"\"", "\"\""),
        ("\"a\\\"b\\\\c\\/d\"", "\"a\\\"b\\\\c/d\""),
        ("\"\\b\\f\\n\\r\\t\"", "\"\\b\\f\\n\\r\\t\""),
        ("\"\\u0001\\u001F\"", "\"\\u0001\\u001f\""),
        ("\"\\u00e9\\u20AC\"", "\"é€\""),
        ("\"\\ud83d\\ude00\"", "\"😀\""),
        ("\"é€😀\"", "\"é€😀\""),
        ("[]", "[]"),
        ("[ 1 , [2, []], {} ]", "[1,[2,[]],{}]"),
        ("{}", "{}"),
        (
            "{\"b\": 1, \"a\": [true, null], \"c\": {\"x\": \"y\"}}",
            "{\"a\":[true,null],\"b\":1,\"c\":{\"x\":\"y\"}}",
        ),
        ("{\"k\": 1, \"k\": 2}", "{\"k\":2}"),
        ("\t\r\n[\n1\n]\n", "[1]"),
    ];

    /// Texts that are not JSON, with the error each gets.
    const INVALID: &[(&str, ParseErrorKind)] = &[
        ("", ParseErrorKind::UnexpectedEnd),
        ("   ", ParseErrorKind::UnexpectedEnd),
        ("nul", ParseErrorKind::UnexpectedEnd),
        ("nulL", ParseErrorKind::UnexpectedCharacter('L')),
        ("True", ParseErrorKind::UnexpectedCharacter('T')),
        ("01", ParseErrorKind::InvalidNumber),
        ("-", ParseErrorKind::InvalidNumber),
        ("1.", ParseErrorKind::InvalidNumber),
        (".5", ParseErrorKind::UnexpectedCharacter('.')),
        ("1e", ParseErrorKind::InvalidNumber),
        ("+1", ParseErrorKind::UnexpectedCharacter('+')),
        ("[1,]", ParseErrorKind::UnexpectedCharacter(']')),
        ("[1 2]", ParseErrorKind::UnexpectedCharacter('2')),
        ("{\"a\":1,}", ParseErrorKind::UnexpectedCharacter('}')),
        ("{\"a\" 1}", ParseErrorKind::UnexpectedCharacter('1')),
        ("{a:1}", ParseErrorKind::UnexpectedCharacter('a')),
        ("{'a':1}", ParseErrorKind::UnexpectedCharacter('\'')),
        ("[1", ParseErrorKind::UnexpectedEnd),
        ("\"abc", ParseErrorKind::UnexpectedEnd),
        ("\"a\nb\"", ParseErrorKind::ControlCharacterInString),
        ("\"\\x\"", ParseErrorKind::InvalidEscape),
        ("\"\\u12\"", ParseErrorKind::InvalidEscape),
        ("\"\\ud800\"", ParseErrorKind::LoneSurrogate),
        ("\"\\udc00\"", ParseErrorKind::LoneSurrogate),
        ("\"\\ud800\\u0041\"", ParseErrorKind::LoneSurrogate),
        ("1 2", ParseErrorKind::TrailingCharacters),
        ("{} x", ParseErrorKind::TrailingCharacters),
        ("/* c */ 1", ParseErrorKind::UnexpectedCharacter('/')),
        ("NaN", ParseErrorKind::UnexpectedCharacter('N')),
    ];

    #[test]
    fn valid_texts_parse_and_print_compactly() {
        for (text, compact) in VALID {
            let v = parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(v.to_json(), *compact, "{text:?}");
            // What we print, serde_json reads back as the same value.
            let ours: serde_json::Value = serde_json::from_str(&v.to_json()).unwrap();
            let theirs: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(ours, theirs, "{text:?}");
        }
    }

    #[test]
    fn invalid_texts_are_refused_with_the_specific_error() {
        for (text, kind) in INVALID {
            let e = parse(text).expect_err(text);
            assert_eq!(e.kind, *kind, "{text:?}");
            assert!(
                serde_json::from_str::<serde_json::Value>(text).is_err(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn errors_say_where() {
        let e = parse("{\n  \"a\": tru }").unwrap_err();
        assert_eq!((e.line, e.column), (2, 11));
        assert_eq!(
            e.to_string(),
            "unexpected character ' ' at line 2 column 11"
        );
        let e = parse_slice(b"{\"a\":\n\"\xff\"}").unwrap_err();
        assert_eq!((e.kind, e.line, e.column), (ParseErrorKind::NotUtf8, 2, 2));
    }

    #[test]
    fn nesting_is_bounded() {
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse(&ok).is_ok());
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(parse(&deep).unwrap_err().kind, ParseErrorKind::TooDeep);
        // Far deeper than the stack could take by recursion: still an error.
        let hostile = "{\"a\":".repeat(1_000_000);
        assert_eq!(parse(&hostile).unwrap_err().kind, ParseErrorKind::TooDeep);
    }

    #[test]
    fn numbers_keep_integers_and_the_text_of_others() {
        let v = parse("[7, -7, 1.5, 1e3, 18446744073709551616, -9223372036854775809]").unwrap();
        let items = v.as_array().unwrap();
        assert_eq!(items[0].as_u64(), Some(7));
        assert_eq!(items[0].as_i64(), Some(7));
        assert_eq!(items[1].as_u64(), None);
        assert_eq!(items[1].as_i64(), Some(-7));
        for item in &items[2..] {
            assert_eq!((item.as_u64(), item.as_i64()), (None, None));
        }
        assert_eq!(
            v.to_json(),
            "[7,-7,1.5,1e3,18446744073709551616,-9223372036854775809]"
        );
    }

    #[test]
    fn strings_escape_like_serde_json() {
        let all: String =
            (0u32..0x80).filter_map(char::from_u32).collect::<String>() + "é\u{2028}😀";
        let mut ours = String::new();
        write_str(&mut ours, &all);
        assert_eq!(ours, serde_json::to_string(&all).unwrap());
        assert_eq!(parse(&ours).unwrap(), Value::String(all));
    }

    #[test]
    fn serializes_like_serde_json_for_random_documents() {
        // A deterministic generator (xorshift) of nested documents.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        fn gen(next: &mut dyn FnMut() -> u64, depth: u32) -> serde_json::Value {
            let pick = next() % if depth > 3 { 4 } else { 6 };
            match pick {
                0 => serde_json::Value::Null,
                1 => serde_json::Value::Bool(next().is_multiple_of(2)),
                2 => serde_json::Value::from(next() >> (next() % 64)),
                3 => {
                    let len = next() % 6;
                    let s: String = (0..len)
                        .map(|_| {
                            let c = next() % 0x300;
                            char::from_u32(c as u32).unwrap_or('x')
                        })
                        .collect();
                    serde_json::Value::String(s)
                }
                4 => serde_json::Value::Array(
                    (0..next() % 4).map(|_| gen(next, depth + 1)).collect(),
                ),
                _ => serde_json::Value::Object(
                    (0..next() % 4)
                        .map(|i| (format!("k{}", (next() % 5) + i), gen(next, depth + 1)))
                        .collect(),
                ),
            }
        }
        for _ in 0..2_000 {
            let doc = gen(&mut next, 0);
            let text = serde_json::to_string(&doc).unwrap();
            let pretty = serde_json::to_string_pretty(&doc).unwrap();
            assert_eq!(parse(&text).unwrap().to_json(), text);
            assert_eq!(parse(&pretty).unwrap().to_json(), text);
        }
    }

    #[test]
    fn object_writer_keeps_member_order() {
        let text = ObjectWriter::new()
            .str("z", "a\"b")
            .u64("y", 18_446_744_073_709_551_615)
            .opt_u64("x", None)
            .opt_str("w", Some("v"))
            .bool("v", true)
            .raw("u", "[1]")
            .value("t", &object([("b", Value::Null), ("a", 1u64.into())]))
            .finish();
        assert_eq!(
            text,
            r#"{"z":"a\"b","y":18446744073709551615,"x":null,"w":"v","v":true,"u":[1],"t":{"a":1,"b":null}}"#
        );
        assert_eq!(ObjectWriter::new().finish(), "{}");
    }

    #[test]
    fn record_reader_follows_the_serde_rules_of_the_records() {
        let text = br#"{"s":"x","n":5,"nul":null,"b":true,"o":{"i":1,"skip":[{"deep":[]}]},"a":["p","q"],"extra":[1,{"z":null}],"s":"last"}"#;
        let mut seen = Vec::new();
        let (mut s, mut n, mut nul, mut b, mut i, mut a) = (None, None, Some(0), None, None, None);
        RecordReader::read(text, &mut |name, r| {
            seen.push(name.to_string());
            match name {
                "s" => s = Some(r.string("s")?),
                "n" => n = Some(r.u32("n")?),
                "nul" => nul = r.opt_u64("nul")?,
                "b" => b = Some(r.bool("b")?),
                "o" => r.object("o", &mut |name, r| {
                    match name {
                        "i" => i = Some(r.u64("i")?),
                        _ => r.skip()?,
                    }
                    Ok(())
                })?,
                "a" => a = r.opt_strings("a")?,
                _ => r.skip()?,
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, ["s", "n", "nul", "b", "o", "a", "extra", "s"]);
        assert_eq!(
            s.as_deref(),
            Some("last"),
            "a repeated member keeps the last value"
        );
        assert_eq!((n, nul, b, i), (Some(5), None, Some(true), Some(1)));
        assert_eq!(a, Some(vec!["p".to_string(), "q".to_string()]));

        // Each typed read refuses the other types, naming the member.
        let typed: [(&[u8], RecordError); 9] = [
            (br#"{"k":1}"#, RecordError::WrongType("k")),
            (br#"{"k":"1"}"#, RecordError::WrongType("k")),
            (br#"{"k":-1}"#, RecordError::WrongType("k")),
            (br#"{"k":1.5}"#, RecordError::WrongType("k")),
            (br#"{"k":4294967296}"#, RecordError::WrongType("k")),
            (br#"{"k":"x"}"#, RecordError::WrongType("k")),
            (br#"{"k":["a",1]}"#, RecordError::WrongType("k")),
            (br#"{"k":[]}"#, RecordError::WrongType("k")),
            (br#"{"k":null}"#, RecordError::WrongType("k")),
        ];
        type Read = fn(&mut RecordReader<'_>) -> Result<(), RecordError>;
        let readers: [Read; 9] = [
            |r| r.string("k").map(drop),
            |r| r.u64("k").map(drop),
            |r| r.u64("k").map(drop),
            |r| r.u64("k").map(drop),
            |r| r.u32("k").map(drop),
            |r| r.bool("k").map(drop),
            |r| r.opt_strings("k").map(drop),
            |r| r.object("k", &mut |_, r| r.skip()),
            |r| r.u64("k").map(drop),
        ];
        for ((text, want), read) in typed.iter().zip(readers) {
            let got = RecordReader::read(text, &mut |_, r| read(r));
            assert_eq!(got, Err(want.clone()), "{}", String::from_utf8_lossy(text));
        }

        assert_eq!(
            RecordReader::read(b" [] ", &mut |_, r| r.skip()),
            Err(RecordError::NotAnObject)
        );
        for bad in [
            &b"{"[..],
            b"{\"a\":}",
            b"{\"a\":1,}",
            b"{} {}",
            b"{\"a\":[1,]}",
            b"{\"a\"\xff:1}",
        ] {
            assert!(
                matches!(
                    RecordReader::read(bad, &mut |_, r| r.skip()),
                    Err(RecordError::Syntax(_))
                ),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // Escaped member names are decoded.
        let mut names = Vec::new();
        RecordReader::read(br#"{"a\u0062":1}"#, &mut |name, r| {
            names.push(name.to_string());
            r.skip()
        })
        .unwrap();
        assert_eq!(names, ["ab"]);
    }
}
