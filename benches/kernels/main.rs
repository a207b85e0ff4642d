//! Kernel benchmarks: the production kernels at Stable Diffusion shapes.
//!
//! `cargo bench --bench kernels` runs everything; `-- --short` keeps only a
//! few shapes and iterations (under a minute on llvmpipe); a further word
//! filters families (`-- --short matmul`; elementwise, matmul, conv, norm,
//! layout, attention). Each line prints the shape, the time per call (GPU
//! timestamps when the adapter has them, else wall-clock after a device
//! sync), TFLOP/s or GB/s, and the naive/tuned ratio measured in the same
//! run. The SD shapes come from the op suite's tables (`tests/ops/cases/`).

mod attention;
// The shape tables shared with the op tests; each target uses its part.
#[allow(dead_code)]
#[path = "../../tests/ops/cases/mod.rs"]
mod cases;
mod common;
mod conv;
mod elementwise;
mod layout;
mod matmul;
mod norm;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let short = args.iter().any(|a| a == "--short");
    let filter: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let want = |family: &str| filter.is_empty() || filter.iter().any(|f| family.contains(f.as_str()));
    let bench = common::Bench::new(short);
    println!("adapter: {}", bench.ctx.describe());
    println!("mode: {}", if short { "short" } else { "full" });
    if want("elementwise") {
        elementwise::run(&bench);
    }
    if want("matmul") {
        matmul::run(&bench);
    }
    if want("conv") {
        conv::run(&bench);
    }
    if want("norm") {
        norm::run(&bench);
    }
    if want("layout") {
        layout::run(&bench);
    }
    if want("attention") {
        attention::run(&bench);
    }
}
