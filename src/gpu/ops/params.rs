//! Shader parameters, one way for every kernel: the uniform block at binding
//! 0 is a `#[repr(C)]` Pod struct declared with `params!`, field for field
//! the WGSL struct. The macro also lists the fields (name, byte offset, byte
//! size, scalar type), and a test parses every shader with naga and compares
//! that list with the WGSL struct's members, so the two cannot drift apart.

/// The scalar type of a field, or of the elements of an array field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scalar {
    U32,
    F32,
}

/// A Rust type a params field may have.
pub trait FieldType {
    const SCALAR: Scalar;
}

impl FieldType for u32 {
    const SCALAR: Scalar = Scalar::U32;
}

impl FieldType for f32 {
    const SCALAR: Scalar = Scalar::F32;
}

/// Packed into `array<vec4<..>, N / 4>` on the WGSL side (a uniform array's
/// stride is 16 bytes, so a flat `array<u32, N>` would not match).
impl<T: FieldType, const N: usize> FieldType for [T; N] {
    const SCALAR: Scalar = T::SCALAR;
}

/// One field of a params struct as it lies in the uniform block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub offset: usize,
    pub size: usize,
    pub scalar: Scalar,
}

/// A kernel's uniform block.
pub trait Params: bytemuck::Pod {
    /// The fields in declaration order.
    const FIELDS: &'static [Field];

    /// The block as the 32-bit words `Dispatch::params` carries.
    fn words(&self) -> &[u32] {
        bytemuck::cast_slice(std::slice::from_ref(self))
    }
}

/// Declares a params struct (all fields public, `Default` zeroed) and its
/// `Params` impl.
macro_rules! params {
    ($(#[$meta:meta])* $vis:vis struct $name:ident {
        $($(#[$fmeta:meta])* $field:ident: $ty:ty,)*
    }) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
        $vis struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
        }

        impl $crate::gpu::ops::params::Params for $name {
            const FIELDS: &'static [$crate::gpu::ops::params::Field] = &[$(
                $crate::gpu::ops::params::Field {
                    name: stringify!($field),
                    offset: std::mem::offset_of!($name, $field),
                    size: std::mem::size_of::<$ty>(),
                    scalar: <$ty as $crate::gpu::ops::params::FieldType>::SCALAR,
                },
            )*];
        }
    };
}
pub(crate) use params;

#[cfg(test)]
mod tests {
    use naga::{ScalarKind, TypeInner};

    use super::*;
    use crate::gpu::ops::tile::Tile;
    use crate::gpu::ops::{attention, conv, elementwise, layout, matmul, norm};
    use crate::gpu::{assemble, Define, Shader};
    use crate::tensor::DType;

    /// A field as both sides are compared: name, offset, size, scalar type.
    type Member = (String, usize, usize, Scalar);

    /// The members of WGSL struct `struct_name`, and its size.
    fn wgsl_members(module: &naga::Module, struct_name: &str) -> (Vec<Member>, usize) {
        let (_, ty) = module
            .types
            .iter()
            .find(|(_, t)| t.name.as_deref() == Some(struct_name))
            .unwrap_or_else(|| panic!("no struct {struct_name}"));
        let TypeInner::Struct { members, span } = &ty.inner else {
            panic!("{struct_name} is not a struct");
        };
        let scalar = |mut ty: naga::Handle<naga::Type>| loop {
            match &module.types[ty].inner {
                TypeInner::Scalar(s) | TypeInner::Vector { scalar: s, .. } => {
                    break match (s.kind, s.width) {
                        (ScalarKind::Uint, 4) => Scalar::U32,
                        (ScalarKind::Float, 4) => Scalar::F32,
                        other => panic!("{struct_name}: unexpected scalar {other:?}"),
                    };
                }
                TypeInner::Array { base, .. } => ty = *base,
                other => panic!("{struct_name}: unexpected member type {other:?}"),
            }
        };
        let members = members
            .iter()
            .map(|m| {
                (
                    m.name.clone().unwrap_or_default(),
                    m.offset as usize,
                    module.types[m.ty].inner.size(module.to_ctx()) as usize,
                    scalar(m.ty),
                )
            })
            .collect();
        (members, *span as usize)
    }

    /// Parses `shader` as assembled for one variant and compares its WGSL
    /// struct `struct_name` with `P`: `Err` says how they differ.
    fn compare<P: Params>(
        shader: &Shader,
        dtype: DType,
        defines: &[Define],
        struct_name: &str,
    ) -> Result<(), String> {
        let src = assemble(shader.source, dtype, false, defines)?;
        let module = naga::front::wgsl::parse_str(&src).map_err(|e| e.emit_to_string(&src))?;
        let (wgsl, span) = wgsl_members(&module, struct_name);
        let rust: Vec<Member> = P::FIELDS
            .iter()
            .map(|f| (f.name.to_string(), f.offset, f.size, f.scalar))
            .collect();
        if rust != wgsl {
            return Err(format!("Rust fields {rust:?}\nWGSL members {wgsl:?}"));
        }
        if std::mem::size_of::<P>() != span {
            return Err(format!(
                "Rust size {}, WGSL size {span}",
                std::mem::size_of::<P>()
            ));
        }
        Ok(())
    }

    fn check<P: Params>(shader: &Shader, dtype: DType, defines: &[Define], struct_name: &str) {
        if let Err(e) = compare::<P>(shader, dtype, defines, struct_name) {
            panic!(
                "{}: the Rust params differ from struct {struct_name}:\n{e}",
                shader.name
            );
        }
    }

    #[test]
    fn rust_params_match_wgsl() {
        let f32 = DType::F32;
        let mm = matmul::defines(Tile::SMALL, false, true, true);
        check::<matmul::Params>(&matmul::MATMUL, f32, &mm, "Params");
        let conv = conv::defines(Tile::SMALL, 3, 3, true, false);
        check::<conv::Params>(&conv::CONV2D, f32, &conv, "Params");
        let flash = attention::plan::FlashPlan::new(40).defines(true);
        check::<attention::Params>(&attention::FLASH, f32, &flash, "Params");
        let naive = attention::naive_defines(40, true);
        check::<attention::Params>(&attention::NAIVE, f32, &naive, "Params");
        let ew = &*elementwise::DEFINES;
        check::<elementwise::Params>(&elementwise::ELEMENTWISE, f32, ew, "Params");
        let cast = elementwise::cast_defines(true);
        check::<elementwise::CastParams>(&elementwise::CAST, DType::F16, &cast, "Params");
        check::<norm::Params>(&norm::NORM, f32, &norm::DEFINES[0], "Params");
        let lay = &*layout::DEFINES;
        check::<layout::permute::TransposeParams>(&layout::LAYOUT, f32, lay, "TransposeParams");
        check::<layout::permute::GatherParams>(&layout::LAYOUT, f32, lay, "GatherParams");
        check::<layout::CopyParams>(&layout::LAYOUT, f32, lay, "CopyParams");
        check::<layout::UpsampleParams>(&layout::LAYOUT, f32, lay, "UpsampleParams");
        check::<layout::EmbeddingParams>(&layout::LAYOUT, f32, lay, "EmbeddingParams");
    }

    // cast.wgsl's `Params` (n, x_off, o_off, _pad) gone wrong three ways.
    params! {
        struct Swapped {
            x_off: u32,
            n: u32,
            o_off: u32,
            _pad: u32,
        }
    }

    params! {
        struct WrongType {
            n: f32,
            x_off: u32,
            o_off: u32,
            _pad: u32,
        }
    }

    params! {
        struct Longer {
            n: u32,
            x_off: u32,
            o_off: u32,
            _pad: u32,
            extra: u32,
        }
    }

    /// The comparison catches a swap, a wrong type and an extra field.
    #[test]
    fn mismatches_are_caught() {
        let (cast, defs) = (&elementwise::CAST, elementwise::cast_defines(true));
        let f16 = DType::F16;
        assert!(compare::<elementwise::CastParams>(cast, f16, &defs, "Params").is_ok());
        assert!(compare::<Swapped>(cast, f16, &defs, "Params").is_err());
        assert!(compare::<WrongType>(cast, f16, &defs, "Params").is_err());
        assert!(compare::<Longer>(cast, f16, &defs, "Params").is_err());
    }
}
