//! The pickle machine: reads the opcodes of protocols 2 to 5 that `torch.save`
//! and Python's pickler emit, builds the object tree, and never calls
//! anything (see `globals.rs` for what a call means here).
//!
//! Bounds: the stack and the mark stack are capped, memo indices are keys of
//! a map (a huge index costs nothing), every length is checked against the
//! bytes left before anything is allocated, the number of nodes is at most
//! the number of opcodes and at most `MAX_NODES`, and the items copied into call arguments have a
//! total budget (no quadratic blow-up from one huge tuple passed many times).
//! Nested containers refer to each other by index, so no nesting depth can
//! overflow the stack.

use std::collections::HashMap;

use super::globals::{self, Global};
use super::input::Input;
use super::value::{Elem, Id, Node, Pickle, Storage};

const MAX_STACK: usize = 1 << 20;

/// Objects in one pickle. An SD checkpoint's `data.pkl` builds tens of thousands
/// (a training checkpoint with optimizer state a few hundred thousand); this bounds
/// the arena a hostile pickle of tiny opcodes could grow.
const MAX_NODES: usize = 1 << 21;

/// Items copied out of containers (call arguments) over a whole pickle: a
/// huge tuple passed to thousands of calls would otherwise cost quadratic time.
const COPY_BUDGET: usize = 1 << 24;

/// A dict key that Python compares by value (strings and ints).
#[derive(Hash, PartialEq, Eq)]
enum Key {
    Str(String),
    Int(i64),
}

struct Vm<'a> {
    input: Input<'a>,
    p: Pickle,
    stack: Vec<Id>,
    marks: Vec<usize>,
    memo: HashMap<u64, Id>,
    /// Position of each (dict, key) in the dict's items, so that a repeated
    /// key replaces its value in constant time.
    dict_keys: HashMap<(Id, Key), usize>,
    budget: usize,
}

/// Runs the pickle `data` and returns its object tree.
pub fn parse(data: &[u8]) -> Result<Pickle, String> {
    let mut vm = Vm {
        input: Input::new(data),
        p: Pickle::default(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        dict_keys: HashMap::new(),
        budget: COPY_BUDGET,
    };
    loop {
        let at = vm.input.pos();
        let op = vm.input.u8()? as u8;
        if op == b'.' {
            let root = vm.pop()?;
            vm.p.root = root;
            return Ok(vm.p);
        }
        vm.step(op)
            .map_err(|e| format!("pickle opcode 0x{op:02x} at byte {at}: {e}"))?;
    }
}

impl Vm<'_> {
    fn push_node(&mut self, n: Node) -> Result<(), String> {
        let id = self.p.nodes.len();
        if id >= MAX_NODES {
            return Err(format!(
                "more than {MAX_NODES} objects: no torch checkpoint has that many"
            ));
        }
        self.p.nodes.push(n);
        self.push(id)
    }

    fn push(&mut self, id: Id) -> Result<(), String> {
        if self.stack.len() >= MAX_STACK {
            return Err("stack too deep".into());
        }
        self.stack.push(id);
        Ok(())
    }

    fn pop(&mut self) -> Result<Id, String> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err("pop across a mark".into());
        }
        self.stack.pop().ok_or_else(|| "stack underflow".into())
    }

    fn top(&self) -> Result<Id, String> {
        self.stack.last().copied().ok_or_else(|| "empty stack".into())
    }

    /// The items pushed since the last MARK.
    fn pop_mark(&mut self) -> Result<Vec<Id>, String> {
        let m = self.marks.pop().ok_or("no mark")?;
        if m > self.stack.len() {
            return Err("mark above the stack".into());
        }
        Ok(self.stack.split_off(m))
    }

    fn memo_put(&mut self, key: u64) -> Result<(), String> {
        let top = self.top()?;
        self.memo.insert(key, top);
        Ok(())
    }

    fn memo_get(&mut self, key: u64) -> Result<(), String> {
        let id = *self
            .memo
            .get(&key)
            .ok_or_else(|| format!("memo entry {key} was never stored"))?;
        self.push(id)
    }

    fn global(&mut self, module: &str, name: &str) -> Result<(), String> {
        let g = globals::resolve(module, name)?;
        self.push_node(Node::Global(g))
    }

    fn call(&mut self, f: Id, args: Vec<Id>) -> Result<(), String> {
        let Node::Global(g) = self.p.node(f) else {
            return Err(format!("call of {}", self.p.kind(f)));
        };
        let n = globals::call(&self.p, *g, &args)?;
        let copied = match &n {
            Node::Set(v) | Node::Tuple(v) | Node::List(v) | Node::Object { args: v, .. } => v.len(),
            Node::Dict(v) => v.len(),
            _ => 0,
        };
        self.charge(copied)?;
        self.push_node(n)
    }

    fn charge(&mut self, items: usize) -> Result<(), String> {
        self.budget = self
            .budget
            .checked_sub(items)
            .ok_or("the pickle copies too many items (damaged or hostile file)")?;
        Ok(())
    }

    fn tuple_args(&mut self, id: Id) -> Result<Vec<Id>, String> {
        match self.p.node(id) {
            Node::Tuple(v) => {
                let v = v.clone();
                self.charge(v.len())?;
                Ok(v)
            }
            _ => Err(format!("arguments are {}, expected a tuple", self.p.kind(id))),
        }
    }

    /// `SETITEM(S)`: a later equal string or int key replaces an earlier one.
    fn set_items(&mut self, dict: Id, kv: &[Id]) -> Result<(), String> {
        if !kv.len().is_multiple_of(2) {
            return Err("odd number of dict items".into());
        }
        let mut items = match &mut self.p.nodes[dict] {
            Node::Dict(items) => std::mem::take(items),
            _ => return Err(format!("setitem on {}", self.p.kind(dict))),
        };
        for pair in kv.chunks_exact(2) {
            let key = match self.p.node(pair[0]) {
                Node::Str(s) => Some(Key::Str(s.clone())),
                Node::Int(i) => Some(Key::Int(*i)),
                _ => None,
            };
            match key.and_then(|k| match self.dict_keys.entry((dict, k)) {
                std::collections::hash_map::Entry::Occupied(e) => Some(*e.get()),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(items.len());
                    None
                }
            }) {
                Some(i) => items[i].1 = pair[1],
                None => items.push((pair[0], pair[1])),
            }
        }
        self.p.nodes[dict] = Node::Dict(items);
        Ok(())
    }

    fn extend(&mut self, target: Id, items: Vec<Id>) -> Result<(), String> {
        match &mut self.p.nodes[target] {
            Node::List(v) | Node::Set(v) => {
                v.extend(items);
                Ok(())
            }
            _ => Err(format!("append to {}", self.p.kind(target))),
        }
    }

    fn persistent_load(&mut self, pid: Id) -> Result<(), String> {
        // ('storage', storage_type, key, location, numel)
        let t = match self.p.node(pid) {
            Node::Tuple(t) if t.len() == 5 => t.clone(),
            _ => return Err("persistent id is not ('storage', type, key, location, size)".into()),
        };
        if self.p.str(t[0]) != Some("storage") {
            return Err("persistent id is not ('storage', type, key, location, size)".into());
        }
        let Node::Global(Global::Storage(elem)) = self.p.node(t[1]) else {
            return Err(format!("storage type is {}", self.p.kind(t[1])));
        };
        let elem: Elem = *elem;
        let key = self.p.str(t[2]).ok_or("storage key is not a string")?.to_string();
        let numel = match self.p.node(t[4]) {
            Node::Int(n) if *n >= 0 => *n as usize,
            _ => return Err("storage size is not a non-negative int".into()),
        };
        self.push_node(Node::Storage(Storage { key, elem, numel }))
    }

    fn step(&mut self, op: u8) -> Result<(), String> {
        match op {
            0x80 => {
                let v = self.input.u8()?;
                if !(2..=5).contains(&v) {
                    return Err(format!("pickle protocol {v}, expected 2 to 5"));
                }
            }
            0x95 => {
                self.input.u64()?; // FRAME: a length hint only
            }
            b'(' => {
                if self.marks.len() >= MAX_STACK {
                    return Err("too many marks".into());
                }
                self.marks.push(self.stack.len());
            }
            b'0' => {
                self.pop()?;
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => self.push(self.top()?)?,
            b'N' => self.push_node(Node::None)?,
            0x88 => self.push_node(Node::Bool(true))?,
            0x89 => self.push_node(Node::Bool(false))?,
            b'J' => {
                let b = self.input.take(4)?;
                let v = i32::from_le_bytes(b.try_into().expect("4 bytes"));
                self.push_node(Node::Int(v as i64))?
            }
            b'K' => {
                let v = self.input.u8()?;
                self.push_node(Node::Int(v as i64))?
            }
            b'M' => {
                let v = self.input.u16()?;
                self.push_node(Node::Int(v as i64))?
            }
            0x8a | 0x8b => {
                let n = if op == 0x8a {
                    self.input.u8()? as u64
                } else {
                    self.input.u32()?
                };
                let b = self.input.bytes(n)?;
                self.push_node(long(&b))?
            }
            b'G' => {
                let b = self.input.take(8)?;
                let v = f64::from_be_bytes(b.try_into().expect("8 bytes"));
                self.push_node(Node::Float(v))?
            }
            b'X' | 0x8c | 0x8d => {
                let n = match op {
                    b'X' => self.input.u32()?,
                    0x8c => self.input.u8()? as u64,
                    _ => self.input.u64()?,
                };
                let b = self.input.bytes(n)?;
                let s = String::from_utf8(b).map_err(|_| "string is not UTF-8")?;
                self.push_node(Node::Str(s))?
            }
            // Python 2 strings: decoded as latin1, as `encoding="latin1"` would.
            b'T' | b'U' => {
                let n = if op == b'T' {
                    self.input.u32()?
                } else {
                    self.input.u8()? as u64
                };
                let b = self.input.bytes(n)?;
                self.push_node(Node::Str(b.iter().map(|&c| c as char).collect()))?
            }
            b'B' | b'C' | 0x8e | 0x96 => {
                let n = match op {
                    b'B' => self.input.u32()?,
                    b'C' => self.input.u8()? as u64,
                    _ => self.input.u64()?,
                };
                let b = self.input.bytes(n)?;
                self.push_node(Node::Bytes(b))?
            }
            b')' => self.push_node(Node::Tuple(Vec::new()))?,
            b't' => {
                let items = self.pop_mark()?;
                self.push_node(Node::Tuple(items))?
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.pop()?);
                }
                items.reverse();
                self.push_node(Node::Tuple(items))?
            }
            b']' => self.push_node(Node::List(Vec::new()))?,
            b'l' => {
                let items = self.pop_mark()?;
                self.push_node(Node::List(items))?
            }
            b'a' => {
                let v = self.pop()?;
                let list = self.top()?;
                self.extend(list, vec![v])?
            }
            b'e' => {
                let items = self.pop_mark()?;
                let list = self.top()?;
                self.extend(list, items)?
            }
            b'}' => self.push_node(Node::Dict(Vec::new()))?,
            b'd' => {
                let items = self.pop_mark()?;
                self.push_node(Node::Dict(Vec::new()))?;
                let dict = self.top()?;
                self.set_items(dict, &items)?
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                let dict = self.top()?;
                self.set_items(dict, &[k, v])?
            }
            b'u' => {
                let items = self.pop_mark()?;
                let dict = self.top()?;
                self.set_items(dict, &items)?
            }
            0x8f => self.push_node(Node::Set(Vec::new()))?,
            0x90 => {
                let items = self.pop_mark()?;
                let set = self.top()?;
                self.extend(set, items)?
            }
            0x91 => {
                let items = self.pop_mark()?;
                self.push_node(Node::Set(items))?
            }
            b'c' => {
                let module = self.input.line()?;
                let name = self.input.line()?;
                self.global(&module, &name)?
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Some(m), Some(n)) = (self.p.str(module), self.p.str(name)) else {
                    return Err("STACK_GLOBAL of non-strings".into());
                };
                let (m, n) = (m.to_string(), n.to_string());
                self.global(&m, &n)?
            }
            b'R' => {
                let args = self.pop()?;
                let f = self.pop()?;
                let args = self.tuple_args(args)?;
                self.call(f, args)?
            }
            0x81 => {
                let args = self.pop()?;
                let cls = self.pop()?;
                let args = self.tuple_args(args)?;
                self.call(cls, args)?
            }
            0x92 => {
                let _kwargs = self.pop()?;
                let args = self.pop()?;
                let cls = self.pop()?;
                let args = self.tuple_args(args)?;
                self.call(cls, args)?
            }
            b'b' => {
                let state = self.pop()?;
                let obj = self.top()?;
                match &mut self.p.nodes[obj] {
                    Node::Object { state: s, .. } => *s = Some(state),
                    // A state_dict() is an OrderedDict whose `_metadata`
                    // attribute comes as BUILD state: attributes are not items.
                    Node::Dict(_) => {}
                    _ => return Err(format!("BUILD on {}", self.p.kind(obj))),
                }
            }
            b'q' => {
                let k = self.input.u8()? as u64;
                self.memo_put(k)?
            }
            b'r' => {
                let k = self.input.u32()?;
                self.memo_put(k)?
            }
            0x94 => {
                let k = self.memo.len() as u64;
                self.memo_put(k)?
            }
            b'h' => {
                let k = self.input.u8()? as u64;
                self.memo_get(k)?
            }
            b'j' => {
                let k = self.input.u32()?;
                self.memo_get(k)?
            }
            b'Q' => {
                let pid = self.pop()?;
                self.persistent_load(pid)?
            }
            _ => return Err(unsupported(op)),
        }
        Ok(())
    }
}

/// LONG1 / LONG4: little-endian two's complement of any length.
fn long(b: &[u8]) -> Node {
    if b.len() > 8 {
        return Node::BigInt;
    }
    if b.is_empty() {
        return Node::Int(0);
    }
    let neg = b[b.len() - 1] & 0x80 != 0;
    let mut buf = [if neg { 0xff } else { 0 }; 8];
    buf[..b.len()].copy_from_slice(b);
    Node::Int(i64::from_le_bytes(buf))
}

fn unsupported(op: u8) -> String {
    let name = match op {
        b'P' => "PERSID (protocol 0)",
        b'i' | b'o' => "INST/OBJ (protocol 0/1 object construction)",
        b'I' | b'L' | b'F' | b'S' | b'V' | b'p' | b'g' => "a protocol 0 text opcode",
        0x82..=0x84 => "EXT (extension registry)",
        0x97 | 0x98 => "out-of-band buffers (protocol 5)",
        _ => "an unknown opcode",
    };
    format!("{name} is not supported in checkpoints")
}
