//! The objects a pickle builds, held in an arena: containers refer to their
//! items by [`Id`], so shared and mutated objects (a dict memoised before its
//! items are set) behave as in Python, and no hostile nesting depth can
//! overflow the stack when the tree is dropped.

use super::globals::Global;

/// Index of a node in [`Pickle::nodes`].
pub type Id = usize;

/// Element types of torch storages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl Elem {
    pub fn size(self) -> usize {
        match self {
            Elem::F64 | Elem::I64 => 8,
            Elem::F32 | Elem::I32 => 4,
            Elem::F16 | Elem::BF16 | Elem::I16 => 2,
            Elem::I8 | Elem::U8 | Elem::Bool => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Elem::F32 => "f32",
            Elem::F16 => "f16",
            Elem::BF16 => "bf16",
            Elem::F64 => "f64",
            Elem::I64 => "i64",
            Elem::I32 => "i32",
            Elem::I16 => "i16",
            Elem::I8 => "i8",
            Elem::U8 => "u8",
            Elem::Bool => "bool",
        }
    }
}

/// A storage named by a persistent id: its bytes are the zip entry
/// `<archive>/data/<key>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storage {
    pub key: String,
    pub elem: Elem,
    /// Length in elements, as recorded in the pickle.
    pub numel: usize,
}

/// A tensor view of a storage, checked to stay inside `storage.numel`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRef {
    pub storage: Storage,
    /// In elements.
    pub offset: usize,
    pub shape: Vec<usize>,
    /// In elements, one per dimension.
    pub stride: Vec<usize>,
}

impl TensorRef {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when the elements are laid out row-major without gaps.
    pub fn is_contiguous(&self) -> bool {
        let mut expect = 1;
        for (&d, &s) in self.shape.iter().zip(&self.stride).rev() {
            if d != 1 && s != expect {
                return false;
            }
            expect *= d;
        }
        true
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    None,
    Bool(bool),
    Int(i64),
    /// An integer beyond i64 (kept, never interpreted).
    BigInt,
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Id>),
    List(Vec<Id>),
    Dict(Vec<(Id, Id)>),
    Set(Vec<Id>),
    /// A whitelisted class or function used as a value (a dict key, a type argument).
    Global(Global),
    /// An instance of a whitelisted opaque class: its constructor arguments and
    /// `BUILD` state are recorded, nothing is run.
    Object {
        class: Global,
        args: Vec<Id>,
        state: Option<Id>,
    },
    Storage(Storage),
    Tensor(TensorRef),
}

/// A parsed pickle: the arena and the root object.
#[derive(Debug, Default)]
pub struct Pickle {
    pub nodes: Vec<Node>,
    pub root: Id,
}

impl Pickle {
    pub fn node(&self, id: Id) -> &Node {
        &self.nodes[id]
    }

    pub fn str(&self, id: Id) -> Option<&str> {
        match self.node(id) {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The (key, value) pairs of a dict, or of the state dict of an object
    /// whose items live in `_parameters` (an `nn.ParameterDict`).
    pub fn dict_items(&self, id: Id) -> Option<&[(Id, Id)]> {
        match self.node(id) {
            Node::Dict(items) => Some(items),
            Node::Object { state: Some(s), .. } => {
                let params = self.get(*s, "_parameters")?;
                match self.node(params) {
                    Node::Dict(items) => Some(items),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// The value under the string key `key` of a dict.
    pub fn get(&self, dict: Id, key: &str) -> Option<Id> {
        let Node::Dict(items) = self.node(dict) else {
            return None;
        };
        items
            .iter()
            .rev()
            .find(|(k, _)| self.str(*k) == Some(key))
            .map(|&(_, v)| v)
    }

    /// A short description of a node for messages.
    pub fn kind(&self, id: Id) -> &'static str {
        match self.node(id) {
            Node::None => "None",
            Node::Bool(_) => "a bool",
            Node::Int(_) | Node::BigInt => "an int",
            Node::Float(_) => "a float",
            Node::Str(_) => "a string",
            Node::Bytes(_) => "bytes",
            Node::Tuple(_) => "a tuple",
            Node::List(_) => "a list",
            Node::Dict(_) => "a dict",
            Node::Set(_) => "a set",
            Node::Global(_) => "a class",
            Node::Object { .. } => "an object",
            Node::Storage(_) => "a storage",
            Node::Tensor(_) => "a tensor",
        }
    }
}
