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

/// A JSON value read only as deep as the header needs: a string, a non-negative
/// integer, a list of at most [`MAX_DIMS`] of those integers (`None` for any other
/// list), or the kind of anything else. Objects and nested lists are skipped, never
/// stored.
enum Shallow {
    Str(String),
    UInt(u64),
    List(Option<Vec<usize>>),
    Other(&'static str),
}

impl Shallow {
    /// What the value is, for messages about values of the wrong kind.
    fn kind(&self) -> &'static str {
        match self {
            Shallow::Str(_) => "a string",
            Shallow::UInt(_) => "a number",
            Shallow::List(_) => "a list",
            Shallow::Other(kind) => kind,
        }
    }
}

impl<'de> de::Deserialize<'de> for Shallow {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Shallow, D::Error> {
        d.deserialize_any(ShallowVisitor)
    }
}

struct ShallowVisitor;

impl<'de> Visitor<'de> for ShallowVisitor {
    type Value = Shallow;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E>(self, s: &str) -> Result<Shallow, E> {
        Ok(Shallow::Str(s.to_string()))
    }
    fn visit_u64<E>(self, u: u64) -> Result<Shallow, E> {
        Ok(Shallow::UInt(u))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Shallow, E> {
        Ok(Shallow::Other("a negative number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Shallow, E> {
        Ok(Shallow::Other("a fraction"))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Shallow, E> {
        Ok(Shallow::Other("a boolean"))
    }
    fn visit_unit<E>(self) -> Result<Shallow, E> {
        Ok(Shallow::Other("null"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shallow, A::Error> {
        let mut list = Some(Vec::new());
        // Elements are read one level deep: a nested list is read and dropped.
        while let Some(item) = seq.next_element::<Shallow>()? {
            match (&mut list, item) {
                (Some(l), Shallow::UInt(u)) if l.len() < MAX_DIMS => match usize::try_from(u) {
                    Ok(u) => l.push(u),
                    Err(_) => list = None,
                },
                _ => list = None,
            }
        }
        Ok(Shallow::List(list))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shallow, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Shallow::Other("an object"))
    }
}

/// The `visit_*` methods of a visitor that accepts only an object: any other value
/// is refused with the visitor's own `not_object` message.
macro_rules! only_objects {
    () => {
        fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(self.not_object())
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Err(self.not_object())
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Err(self.not_object())
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Err(self.not_object())
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(self.not_object())
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Err(self.not_object())
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Err(self.not_object())
        }
    };
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
            let s = match map.next_value::<Shallow>()? {
                Shallow::Str(s) => s,
                other => {
                    return Err(stop(
                        self.0,
                        format!(
                            "`__metadata__` value of {k:?} is {}, expected a string",
                            other.kind()
                        ),
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
    only_objects!();
}

impl MetadataSeed<'_> {
    fn not_object<E: de::Error>(&self) -> E {
        stop(self.0, "`__metadata__` is not a JSON object".into())
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
    dtype: Option<Shallow>,
    shape: Option<Shallow>,
    offsets: Option<Shallow>,
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
            Shallow::Str(s) => s,
            _ => return Err(format!("entry {name:?}: `dtype` is not a string")),
        };
        let ints = |field: Option<Shallow>, k: &str| match field {
            None => Err(missing(k)),
            Some(Shallow::List(Some(list))) => Ok(list),
            Some(_) => Err(format!(
                "entry {name:?}: `{k}` is not a list of at most {MAX_DIMS} non-negative integers"
            )),
        };
        let shape = ints(f.shape, "shape")?;
        let offsets = ints(f.offsets, "data_offsets")?;
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
    only_objects!();
}
