//! The tiny WGSL preprocessor: kernel variants without string pasting in Rust.
//!
//! A shader source may contain lines `#if NAME`, `#else`, `#endif` (nestable);
//! NAME is true when it is defined with a non-zero value. A prelude is prepended
//! that enables the extensions a variant needs and defines
//! `alias T = f32|f16;` (the storage element type, accumulation is always f32)
//! and `const NAME: u32 = value;` for every numeric define, so workgroup sizes
//! chosen in Rust are the ones WGSL sees.

use crate::tensor::DType;

/// A compile-time switch or constant of a kernel variant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Define {
    pub name: &'static str,
    pub value: u32,
}

/// Builds the final WGSL text of a variant.
pub fn assemble(source: &str, dtype: DType, subgroups: bool, defines: &[Define]) -> Result<String, String> {
    let mut out = String::with_capacity(source.len() + 512);
    if dtype == DType::F16 {
        out.push_str("enable f16;\n");
    }
    out.push_str(&format!("alias T = {};\n", dtype.name()));
    out.push_str(&format!("alias T4 = vec4<{}>;\n", dtype.name()));
    out.push_str(&format!("const SUBGROUPS: u32 = {}u;\n", subgroups as u32));
    for d in defines {
        out.push_str(&format!("const {}: u32 = {}u;\n", d.name, d.value));
    }
    let is_set = |name: &str| -> bool {
        match name {
            "SUBGROUPS" => subgroups,
            "F16" => dtype == DType::F16,
            _ => defines.iter().any(|d| d.name == name && d.value != 0),
        }
    };
    // Stack of (this branch active, some branch of this #if already taken).
    let mut stack: Vec<(bool, bool)> = Vec::new();
    for (lineno, line) in source.lines().enumerate() {
        let t = line.trim_start();
        let active = stack.iter().all(|&(a, _)| a);
        if let Some(name) = t.strip_prefix("#if ") {
            let v = is_set(name.trim());
            stack.push((v, v));
        } else if t.starts_with("#else") {
            let top = stack
                .last_mut()
                .ok_or_else(|| format!("line {}: #else without #if", lineno + 1))?;
            *top = (!top.1, true);
        } else if t.starts_with("#endif") {
            stack
                .pop()
                .ok_or_else(|| format!("line {}: #endif without #if", lineno + 1))?;
        } else if t.starts_with('#') {
            return Err(format!("line {}: unknown directive {t:?}", lineno + 1));
        } else if active {
            out.push_str(line);
            out.push('\n');
        } else {
            // Keep line numbers of naga's messages meaningful.
            out.push('\n');
        }
    }
    if !stack.is_empty() {
        return Err("unterminated #if".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branches_and_defines() {
        let src = "a\n#if X\nb\n#if Y\nc\n#else\nd\n#endif\n#else\ne\n#endif\nf\n";
        let defs = [Define { name: "X", value: 1 }];
        let out = assemble(src, DType::F32, false, &defs).unwrap();
        let body: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
        assert!(body.contains(&"alias T = f32;"));
        assert!(body.contains(&"const X: u32 = 1u;"));
        let code: Vec<&str> = body.into_iter().filter(|l| l.len() == 1).collect();
        assert_eq!(code, vec!["a", "b", "d", "f"]);
        let out16 = assemble(src, DType::F16, true, &[]).unwrap();
        assert!(out16.starts_with("enable f16;\n"));
        assert!(out16.contains("const SUBGROUPS: u32 = 1u;"));
        let code: Vec<&str> = out16.lines().filter(|l| l.len() == 1).collect();
        assert_eq!(code, vec!["a", "e", "f"]);
    }

    #[test]
    fn malformed() {
        assert!(assemble("#if X\n", DType::F32, false, &[]).is_err());
        assert!(assemble("#endif\n", DType::F32, false, &[]).is_err());
        assert!(assemble("#define X\n", DType::F32, false, &[]).is_err());
    }
}
