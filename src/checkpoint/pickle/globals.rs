//! The whitelist: the only classes and functions a pickle may name, and what
//! "calling" each one means here. Nothing is ever executed: a rebuild
//! function becomes a [`TensorRef`], a container constructor becomes a
//! container, metadata classes become inert [`Node::Object`]s. Any other
//! global is refused by name.

use super::value::{Elem, Id, Node, Pickle, Storage, TensorRef};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Global {
    /// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])`.
    RebuildTensorV2,
    /// `torch._utils._rebuild_parameter(data, requires_grad, hooks)` and
    /// `_rebuild_parameter_with_state(.., state)`: the parameter is its data.
    RebuildParameter,
    /// `torch._tensor._rebuild_from_type_v2(func, type, args, state)`: `func(*args)`.
    RebuildFromType,
    /// `collections.OrderedDict`.
    OrderedDict,
    /// `_codecs.encode(str, "latin1")`: how protocol 2 stores Python 3 bytes.
    Encode,
    /// `numpy.core.multiarray.scalar(dtype, bytes)` (A1111 step counts).
    NumpyScalar,
    /// `builtins.set` / `frozenset`.
    Set,
    /// `torch.FloatStorage` and friends: the type in a storage's persistent id.
    Storage(Elem),
    /// Classes kept as opaque objects, or used only as values (`torch.float16`,
    /// `numpy.dtype`, Lightning's `ModelCheckpoint` callback key, the
    /// `nn.Parameter` type of `_rebuild_from_type_v2`...).
    Opaque(&'static str),
}

/// Classes and values that may appear, never called: (module, name).
const OPAQUE: &[(&str, &str)] = &[
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("torch", "Size"),
    ("torch", "Tensor"),
    ("torch", "device"),
    ("torch", "float32"),
    ("torch", "float16"),
    ("torch", "bfloat16"),
    ("torch", "float64"),
    ("torch", "int64"),
    ("torch.nn.parameter", "Parameter"),
    ("torch.nn.modules.container", "ParameterDict"),
    ("pytorch_lightning.callbacks", "model_checkpoint"),
    ("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint"),
    ("lightning.pytorch.callbacks.model_checkpoint", "ModelCheckpoint"),
];

/// Resolves a `GLOBAL` / `STACK_GLOBAL`, or says why not.
pub fn resolve(module: &str, name: &str) -> Result<Global, String> {
    let g = match (module, name) {
        ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => Global::RebuildParameter,
        ("torch._tensor", "_rebuild_from_type_v2") => Global::RebuildFromType,
        ("collections", "OrderedDict") => Global::OrderedDict,
        ("_codecs", "encode") => Global::Encode,
        ("numpy.core.multiarray" | "numpy._core.multiarray", "scalar") => Global::NumpyScalar,
        ("builtins" | "__builtin__", "set" | "frozenset") => Global::Set,
        ("torch", storage) if storage.ends_with("Storage") => Global::Storage(
            storage_elem(storage).ok_or_else(|| format!("storage type torch.{storage} is not supported"))?,
        ),
        _ => match OPAQUE.iter().find(|(m, n)| *m == module && *n == name) {
            Some((_, n)) => Global::Opaque(n),
            None => {
                return Err(format!(
                    "the pickle names the global `{module}.{name}`, which is not on the list of \
                     types a checkpoint may contain (the file is never executed; re-save it as safetensors)"
                ))
            }
        },
    };
    Ok(g)
}

fn storage_elem(name: &str) -> Option<Elem> {
    Some(match name {
        "FloatStorage" => Elem::F32,
        "HalfStorage" => Elem::F16,
        "BFloat16Storage" => Elem::BF16,
        "DoubleStorage" => Elem::F64,
        "LongStorage" => Elem::I64,
        "IntStorage" => Elem::I32,
        "ShortStorage" => Elem::I16,
        "CharStorage" => Elem::I8,
        "ByteStorage" | "UntypedStorage" => Elem::U8,
        "BoolStorage" => Elem::Bool,
        _ => return None,
    })
}

impl Global {
    pub fn name(self) -> &'static str {
        match self {
            Global::RebuildTensorV2 => "_rebuild_tensor_v2",
            Global::RebuildParameter => "_rebuild_parameter",
            Global::RebuildFromType => "_rebuild_from_type_v2",
            Global::OrderedDict => "OrderedDict",
            Global::Encode => "_codecs.encode",
            Global::NumpyScalar => "numpy scalar",
            Global::Set => "set",
            Global::Storage(_) => "storage type",
            Global::Opaque(n) => n,
        }
    }
}

/// What `REDUCE` (`callable(*args)`) and `NEWOBJ` (`cls.__new__(cls, *args)`)
/// produce for a whitelisted global: a new node to push.
pub fn call(p: &Pickle, g: Global, args: &[Id]) -> Result<Node, String> {
    let arg = |i: usize| {
        args.get(i)
            .copied()
            .ok_or_else(|| format!("{} called with {} arguments", g.name(), args.len()))
    };
    match g {
        Global::RebuildTensorV2 => rebuild_tensor(p, args).map(Node::Tensor),
        Global::RebuildParameter => match p.node(arg(0)?) {
            t @ Node::Tensor(_) => Ok(t.clone()),
            _ => Err(format!("_rebuild_parameter of {}", p.kind(arg(0)?))),
        },
        Global::RebuildFromType => {
            // (func, new_type, args, state): the tensor subclass is irrelevant here.
            let Node::Global(func) = p.node(arg(0)?) else {
                return Err("_rebuild_from_type_v2 without a function".into());
            };
            let Node::Tuple(inner) = p.node(arg(2)?) else {
                return Err("_rebuild_from_type_v2 without an argument tuple".into());
            };
            match func {
                Global::RebuildTensorV2 | Global::RebuildParameter => call(p, *func, inner),
                other => Err(format!("_rebuild_from_type_v2 of {}", other.name())),
            }
        }
        Global::OrderedDict => {
            let mut items = Vec::new();
            if let Some(&list) = args.first() {
                let (Node::List(pairs) | Node::Tuple(pairs)) = p.node(list) else {
                    return Err(format!("OrderedDict of {}", p.kind(list)));
                };
                for &pair in pairs {
                    match p.node(pair) {
                        Node::Tuple(kv) | Node::List(kv) if kv.len() == 2 => items.push((kv[0], kv[1])),
                        _ => return Err("OrderedDict item is not a (key, value) pair".into()),
                    }
                }
            }
            Ok(Node::Dict(items))
        }
        Global::Encode => {
            let text = p.str(arg(0)?).ok_or("_codecs.encode of a non-string")?;
            match p.str(arg(1)?) {
                Some("latin1" | "latin-1") => text
                    .chars()
                    .map(|c| u8::try_from(c as u32).ok())
                    .collect::<Option<Vec<u8>>>()
                    .map(Node::Bytes)
                    .ok_or_else(|| "_codecs.encode: character outside latin1".into()),
                Some("utf-8" | "utf8") => Ok(Node::Bytes(text.as_bytes().to_vec())),
                other => Err(format!("_codecs.encode with encoding {other:?}")),
            }
        }
        Global::NumpyScalar => Ok(numpy_scalar(p, args).unwrap_or(Node::Object {
            class: g,
            args: args.to_vec(),
            state: None,
        })),
        Global::Set => match args.first().map(|&a| p.node(a)) {
            None => Ok(Node::Set(Vec::new())),
            Some(Node::List(v) | Node::Tuple(v) | Node::Set(v)) => Ok(Node::Set(v.clone())),
            Some(_) => Err("set of a non-sequence".into()),
        },
        Global::Storage(_) => Err("a storage type called outside a persistent id".into()),
        Global::Opaque(_) => Ok(Node::Object {
            class: g,
            args: args.to_vec(),
            state: None,
        }),
    }
}

fn int(p: &Pickle, id: Id, what: &str) -> Result<usize, String> {
    match p.node(id) {
        Node::Int(v) => usize::try_from(*v).map_err(|_| format!("{what} is negative ({v})")),
        other => Err(format!("{what} is {other:?}, expected an int")),
    }
}

fn ints(p: &Pickle, id: Id, what: &str) -> Result<Vec<usize>, String> {
    match p.node(id) {
        Node::Tuple(v) | Node::List(v) => v.iter().map(|&i| int(p, i, what)).collect(),
        _ => Err(format!("{what} is {}, expected a tuple", p.kind(id))),
    }
}

/// `_rebuild_tensor_v2(storage, offset, size, stride, ..)`, bounds-checked:
/// the last element reached through the strides lies inside the storage.
fn rebuild_tensor(p: &Pickle, args: &[Id]) -> Result<TensorRef, String> {
    if args.len() < 4 {
        return Err(format!("_rebuild_tensor_v2 with {} arguments", args.len()));
    }
    let Node::Storage(storage) = p.node(args[0]) else {
        return Err(format!(
            "_rebuild_tensor_v2 of {}, expected a storage",
            p.kind(args[0])
        ));
    };
    let storage: Storage = storage.clone();
    let offset = int(p, args[1], "storage offset")?;
    let shape = ints(p, args[2], "tensor size")?;
    let stride = ints(p, args[3], "tensor stride")?;
    if shape.len() != stride.len() {
        return Err(format!(
            "tensor size {shape:?} and stride {stride:?} differ in rank"
        ));
    }
    let numel = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("tensor size {shape:?} overflows"))?;
    if numel > 0 {
        // Index of the last element: offset + sum((d - 1) * s).
        let last = shape
            .iter()
            .zip(&stride)
            .try_fold(offset, |a, (&d, &s)| {
                (d - 1).checked_mul(s).and_then(|x| a.checked_add(x))
            })
            .ok_or_else(|| format!("tensor size {shape:?} stride {stride:?} overflows"))?;
        if last >= storage.numel {
            return Err(format!(
                "tensor of size {shape:?}, stride {stride:?} at offset {offset} reaches element {last} \
                 of storage {} which has {} elements",
                storage.key, storage.numel
            ));
        }
    }
    Ok(TensorRef {
        storage,
        offset,
        shape,
        stride,
    })
}

/// numpy scalars as `scalar(dtype, bytes)`, the dtype an object built as
/// `numpy.dtype("i8", ..)` with a state tuple whose second item is the byte order.
fn numpy_scalar(p: &Pickle, args: &[Id]) -> Option<Node> {
    let Node::Object {
        args: dargs, state, ..
    } = p.node(*args.first()?)
    else {
        return None;
    };
    let code = p.str(*dargs.first()?)?;
    let little = match state.map(|s| p.node(s)) {
        Some(Node::Tuple(st)) => st.get(1).and_then(|&b| p.str(b)) != Some(">"),
        _ => true,
    };
    let Node::Bytes(raw) = p.node(*args.get(1)?) else {
        return None;
    };
    let mut b = raw.clone();
    if !little {
        b.reverse();
    }
    let fixed = |n: usize| -> Option<[u8; 8]> {
        if b.len() != n {
            return None;
        }
        let mut out = [0u8; 8];
        out[..n].copy_from_slice(&b);
        Some(out)
    };
    let sign_extend = |v: [u8; 8], n: usize| {
        let shift = 64 - 8 * n as u32;
        (i64::from_le_bytes(v) << shift) >> shift
    };
    Some(match code {
        "i1" | "i2" | "i4" | "i8" => {
            let n = code[1..].parse().ok()?;
            Node::Int(sign_extend(fixed(n)?, n))
        }
        "u1" | "u2" | "u4" => Node::Int(i64::from_le_bytes(fixed(code[1..].parse().ok()?)?)),
        "f8" => Node::Float(f64::from_le_bytes(fixed(8)?)),
        "f4" => Node::Float(f32::from_le_bytes(fixed(4)?[..4].try_into().ok()?) as f64),
        _ => return None,
    })
}
