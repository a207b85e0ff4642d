//! `sd-wgpu samplers`: every sampler with the names `--sampler` accepts for it (ours, A1111's,
//! then sd.cpp's, ComfyUI's and older spellings) and what it does.

use std::fmt::Write as _;

use sd_wgpu::schedulers::SamplerKind;

use super::stdout::Stdout;

pub fn run() -> anyhow::Result<()> {
    let mut out = Stdout::new();
    out.print(&render());
    out.finish()
}

fn render() -> String {
    let mut out = format!("{:<16}{:<18}WHAT IT IS\n", "NAME", "A1111");
    for kind in SamplerKind::ALL {
        let _ = writeln!(
            out,
            "{:<16}{:<18}{}",
            kind.name(),
            kind.a1111_name(),
            kind.description()
        );
        if !kind.aliases().is_empty() {
            let _ = writeln!(out, "{:<34}also: {}", "", kind.aliases().join(", "));
        }
    }
    out.push_str(
        "\nNames match in any case, with or without spaces, '_' or '-', and 'pp' for '++'.\n\
         Without --sampler: the one the model's scheduler config names (PNDM for SD 1.5).\n\
         PNG metadata records A1111's name.\n",
    );
    out
}
