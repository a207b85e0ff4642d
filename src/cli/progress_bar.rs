//! The generation progress bar on stderr: model calls done, it/s, ETA.
//! Hidden with `--quiet` and when stderr is not a terminal.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use sd_wgpu::pipeline::{Control, Progress, Stage, Step};

pub struct Bar {
    bar: ProgressBar,
}

impl Bar {
    pub fn new(quiet: bool) -> Bar {
        let target = if quiet || !std::io::stderr().is_terminal() {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let style = ProgressStyle::with_template("{msg:<16} [{bar:30}] {pos}/{len} {rate} eta {eta}")
            .expect("valid template")
            .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                // tqdm's convention: s/it when slower than one per second.
                let per_sec = s.per_sec();
                let _ = if per_sec >= 1.0 || per_sec == 0.0 {
                    write!(w, "{per_sec:.2} it/s")
                } else {
                    write!(w, "{:.2} s/it", 1.0 / per_sec)
                };
            })
            .progress_chars("=> ");
        let bar = ProgressBar::with_draw_target(None, target).with_style(style);
        Bar { bar }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Progress for Bar {
    fn stage(&mut self, stage: Stage) {
        self.bar.set_message(match stage {
            Stage::EncodingPrompt => "encoding prompt".to_string(),
            Stage::EncodingImage => "encoding image".to_string(),
            Stage::Sampling { image } => format!("image {}", image + 1),
            Stage::Decoding { image } => format!("decoding {}", image + 1),
        });
    }

    fn step(&mut self, step: &Step) -> Control {
        if self.bar.length().is_none() {
            self.bar.set_length((step.calls * step.images) as u64);
            self.bar.reset_eta();
        }
        self.bar.inc(1);
        Control::Continue
    }
}
