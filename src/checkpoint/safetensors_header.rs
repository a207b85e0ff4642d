//! The JSON header of a safetensors file, read in one streaming pass straight into
//! checked entries.
//!
//! A header may be up to 100 MB (the reference limit). Parsed into generic JSON
//! values, a hostile one (a million tiny entries, a shape list of millions of
//! numbers) costs gigabytes and seconds before anything can be refused; here every
//! object, list and entry is bounded as it is read (`MAX_ENTRIES`, `MAX_FIELDS`,
//! `MAX_DIMS`), nothing unused is kept, and the first problem stops the parse.
//! Semantic problems ("entry "w" has no `dtype` field") travel beside the parser
//! in `Problem`, so they reach the user as written, not as a JSON syntax error.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Tensors (and `__metadata__` keys) per file. SD checkpoints hold about 1,100 to
/// 2,500 tensors and the largest real files (unsharded LLMs, LoRA stacks) some
/// thousands; a header with more is hostile or broken.
pub const MAX_ENTRIES: usize = 100_000;

/// Fields of one tensor entry: `dtype`, `shape`, `data_offsets`, and a few spare.
const MAX_FIELDS: usize = 16;

/// Dimensions of a shape (and values of any list): real tensors have at most 5 or 6.
pub const MAX_DIMS: usize = 64;

/// One tensor as the header describes it, offsets relative to the data area.
pub struct RawEntry {
    pub dtype: String,
    pub shape: Vec<usize>,
    pub begin: usize,
    pub end: usize,
}

/// The entries in header order, and the `__metadata__` strings.
pub struct Header {
    pub entries: Vec<(String, RawEntry)>,
    pub metadata: BTreeMap<String, String>,
}

/// The first semantic problem found, set just before the parser is stopped.
type Problem = RefCell<Option<String>>;

/// Parses the header text.
pub fn parse(text: &str) -> Result<Header, String> {
    let problem = Problem::default();
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = TopSeed(&problem)
        .deserialize(&mut de)
        .and_then(|h| de.end().map(|()| h));
    parsed.map_err(|e| {
        problem
            .take()
            .unwrap_or_else(|| format!("header is not a valid JSON object: {e}"))
    })
}

/// Records `msg` and returns the error that stops the parser.
fn stop<E: de::Error>(problem: &Problem, msg: String) -> E {
    *problem.borrow_mut() = Some(msg);
    E::custom("invalid safetensors header")
}

struct TopSeed<'a>(&'a Problem);

impl<'de> DeserializeSeed<'de> for TopSeed<'_> {
    type Value = Header;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Header, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TopSeed<'_> {
    type Value = Header;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Header, A::Error> {
        let mut entries = Vec::new();
        let mut names = HashSet::new();
        let mut metadata = None;
        while let Some(name) = map.next_key::<String>()? {
            if entries.len() == MAX_ENTRIES {
                return Err(stop(
                    self.0,
                    format!(
                        "header has more than {MAX_ENTRIES} tensors, more than any real checkpoint: \
                         a corrupted or hostile file"
                    ),
                ));
            }
            if !names.insert(name.clone()) {
                return Err(stop(self.0, format!("header has the key {name:?} twice")));
            }
            if name == "__metadata__" {
                metadata = Some(map.next_value_seed(MetadataSeed(self.0))?);
            } else {
                let entry = map.next_value_seed(EntrySeed {
                    problem: self.0,
                    name: &name,
                })?;
                entries.push((name, entry));
            }
        }
        Ok(Header {
            entries,
            metadata: metadata.unwrap_or_default(),
        })
    }
}

/// What a JSON value is, for messages about values of the wrong kind.
fn kind_of<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    struct Kind;
    impl<'de> Visitor<'de> for Kind {
        type Value = &'static str;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E>(self, _: bool) -> Result<&'static str, E> {
            Ok("a boolean")
        }
        fn visit_i64<E>(self, _: i64) -> Result<&'static str, E> {
            Ok("a number")
        }
        fn visit_u64<E>(self, _: u64) -> Result<&'static str, E> {
            Ok("a number")
        }
        fn visit_f64<E>(self, _: f64) -> Result<&'static str, E> {
            Ok("a number")
        }
        fn visit_str<E>(self, _: &str) -> Result<&'static str, E> {
            Ok("a string")
        }
        fn visit_unit<E>(self) -> Result<&'static str, E> {
            Ok("null")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<&'static str, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok("a list")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<&'static str, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok("an object")
        }
    }
    d.deserialize_any(Kind)
}

/// A value that is a string, or the kind of value it is instead.
enum StrOr {
    Str(String),
    Not(&'static str),
}

impl<'de> de::Deserialize<'de> for StrOr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<StrOr, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrOr;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E>(self, s: &str) -> Result<StrOr, E> {
                Ok(StrOr::Str(s.to_string()))
            }
            fn visit_string<E>(self, s: String) -> Result<StrOr, E> {
                Ok(StrOr::Str(s))
            }
            fn visit_bool<E>(self, _: bool) -> Result<StrOr, E> {
                Ok(StrOr::Not("a boolean"))
            }
            fn visit_i64<E>(self, _: i64) -> Result<StrOr, E> {
                Ok(StrOr::Not("a number"))
            }
            fn visit_u64<E>(self, _: u64) -> Result<StrOr, E> {
                Ok(StrOr::Not("a number"))
            }
            fn visit_f64<E>(self, _: f64) -> Result<StrOr, E> {
                Ok(StrOr::Not("a number"))
            }
            fn visit_unit<E>(self) -> Result<StrOr, E> {
                Ok(StrOr::Not("null"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<StrOr, A::Error> {
                let kind = kind_of(de::value::SeqAccessDeserializer::new(seq))?;
                Ok(StrOr::Not(kind))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<StrOr, A::Error> {
                let kind = kind_of(de::value::MapAccessDeserializer::new(map))?;
                Ok(StrOr::Not(kind))
            }
        }
        d.deserialize_any(V)
    }
}

/// A list of at most [`MAX_DIMS`] non-negative integers; `None` for anything else
/// (another kind of value, a negative or fractional number, a longer list).
struct UInts(Option<Vec<usize>>);

impl<'de> de::Deserialize<'de> for UInts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<UInts, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UInts;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<UInts, A::Error> {
                let mut out = Some(Vec::new());
                while let Some(v) = seq.next_element::<UInt>()? {
                    match (&mut out, v) {
                        (Some(list), UInt(Some(u))) if list.len() < MAX_DIMS => list.push(u),
                        _ => out = None,
                    }
                }
                Ok(UInts(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UInts, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(UInts(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<UInts, E> {
                Ok(UInts(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<UInts, E> {
                Ok(UInts(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<UInts, E> {
                Ok(UInts(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<UInts, E> {
                Ok(UInts(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<UInts, E> {
                Ok(UInts(None))
            }
            fn visit_unit<E>(self) -> Result<UInts, E> {
                Ok(UInts(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// One list element: a non-negative integer that fits `usize`, or `None`.
struct UInt(Option<usize>);

impl<'de> de::Deserialize<'de> for UInt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<UInt, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UInt;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_u64<E>(self, u: u64) -> Result<UInt, E> {
                Ok(UInt(usize::try_from(u).ok()))
            }
            fn visit_i64<E>(self, _: i64) -> Result<UInt, E> {
                Ok(UInt(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<UInt, E> {
                Ok(UInt(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<UInt, E> {
                Ok(UInt(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<UInt, E> {
                Ok(UInt(None))
            }
            fn visit_unit<E>(self) -> Result<UInt, E> {
                Ok(UInt(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<UInt, A::Error> {
                kind_of(de::value::SeqAccessDeserializer::new(seq))?;
                Ok(UInt(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<UInt, A::Error> {
                kind_of(de::value::MapAccessDeserializer::new(map))?;
                Ok(UInt(None))
            }
        }
        d.deserialize_any(V)
    }
}

struct MetadataSeed<'a>(&'a Problem);

impl<'de> DeserializeSeed<'de> for MetadataSeed<'_> {
    type Value = BTreeMap<String, String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MetadataSeed<'_> {
    type Value = BTreeMap<String, String>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some(k) = map.next_key::<String>()? {
            if out.len() == MAX_ENTRIES {
                return Err(stop(
                    self.0,
                    format!("`__metadata__` has more than {MAX_ENTRIES} keys: a corrupted or hostile file"),
                ));
            }
            let s = match map.next_value::<StrOr>()? {
                StrOr::Str(s) => s,
                StrOr::Not(kind) => {
                    return Err(stop(
                        self.0,
                        format!("`__metadata__` value of {k:?} is {kind}, expected a string"),
                    ))
                }
            };
            if out.contains_key(&k) {
                return Err(stop(self.0, format!("`__metadata__` has the key {k:?} twice")));
            }
            out.insert(k, s);
        }
        Ok(out)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(stop(self.0, "`__metadata__` is not a JSON object".into()))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Err(stop(self.0, "`__metadata__` is not a JSON object".into()))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Err(stop(self.0, "`__metadata__` is not a JSON object".into()))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Err(stop(self.0, "`__metadata__` is not a JSON object".into()))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Err(stop(self.0, "`__metadata__` is not a JSON object".into()))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Err(stop(self.0, "`__metadata__` is not a JSON object".into()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Err(stop(self.0, "`__metadata__` is not a JSON object".into()))
    }
}

struct EntrySeed<'a> {
    problem: &'a Problem,
    name: &'a str,
}

impl<'de> DeserializeSeed<'de> for EntrySeed<'_> {
    type Value = RawEntry;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RawEntry, D::Error> {
        d.deserialize_any(self)
    }
}

/// The fields of an entry as read, before they are checked together.
#[derive(Default)]
struct Fields {
    dtype: Option<StrOr>,
    shape: Option<UInts>,
    offsets: Option<UInts>,
}

impl EntrySeed<'_> {
    fn not_object<E: de::Error>(&self) -> E {
        stop(
            self.problem,
            format!("entry {:?} is not a JSON object", self.name),
        )
    }

    fn check(&self, f: Fields) -> Result<RawEntry, String> {
        let name = self.name;
        let missing = |k: &str| format!("entry {name:?} has no `{k}` field");
        let dtype = match f.dtype.ok_or_else(|| missing("dtype"))? {
            StrOr::Str(s) => s,
            StrOr::Not(_) => return Err(format!("entry {name:?}: `dtype` is not a string")),
        };
        let not_ints = |k: &str| {
            format!("entry {name:?}: `{k}` is not a list of at most {MAX_DIMS} non-negative integers")
        };
        let shape = f
            .shape
            .ok_or_else(|| missing("shape"))?
            .0
            .ok_or_else(|| not_ints("shape"))?;
        let offsets = f
            .offsets
            .ok_or_else(|| missing("data_offsets"))?
            .0
            .ok_or_else(|| not_ints("data_offsets"))?;
        let [begin, end] = offsets[..] else {
            return Err(format!(
                "entry {name:?}: `data_offsets` has {} values, expected [begin, end]",
                offsets.len()
            ));
        };
        Ok(RawEntry {
            dtype,
            shape,
            begin,
            end,
        })
    }
}

impl<'de> Visitor<'de> for EntrySeed<'_> {
    type Value = RawEntry;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawEntry, A::Error> {
        let name = self.name;
        let mut fields = Fields::default();
        let mut seen = HashSet::new();
        while let Some(k) = map.next_key::<String>()? {
            if seen.len() == MAX_FIELDS {
                return Err(stop(
                    self.problem,
                    format!("entry {name:?} has more than {MAX_FIELDS} fields"),
                ));
            }
            if !seen.insert(k.clone()) {
                return Err(stop(
                    self.problem,
                    format!("entry {name:?} has the field {k:?} twice"),
                ));
            }
            match k.as_str() {
                "dtype" => fields.dtype = Some(map.next_value()?),
                "shape" => fields.shape = Some(map.next_value()?),
                "data_offsets" => fields.offsets = Some(map.next_value()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        self.check(fields).map_err(|msg| stop(self.problem, msg))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<RawEntry, A::Error> {
        Err(self.not_object())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<RawEntry, E> {
        Err(self.not_object())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<RawEntry, E> {
        Err(self.not_object())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<RawEntry, E> {
        Err(self.not_object())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<RawEntry, E> {
        Err(self.not_object())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<RawEntry, E> {
        Err(self.not_object())
    }
    fn visit_unit<E: de::Error>(self) -> Result<RawEntry, E> {
        Err(self.not_object())
    }
}
