//! Generation progress on stderr: a bar (model calls done, it/s, ETA) when
//! stderr is a terminal, else one line every [`LOG_EVERY`] so that logs and
//! `nohup` runs show life; nothing with `--quiet`. Warnings are printed as
//! soon as the pipeline reports them (once each), and Ctrl-C stops the run
//! at the next step boundary (see `interrupt`).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use sd_wgpu::pipeline::{Control, Progress, Stage, Step};

/// How often a line is printed when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

pub struct Bar {
    bar: ProgressBar,
    /// Stderr is not a terminal (and not `--quiet`): log lines instead of the bar.
    log: Option<Log>,
    quiet: bool,
    /// Images in the whole run, and the run's index of the current request's image 0.
    images: usize,
    first: usize,
    warned: Vec<String>,
    stop: Arc<AtomicBool>,
}

impl Bar {
    /// Progress over `images` images (all requests of the run); the run
    /// stops once `stop` is set.
    pub fn new(quiet: bool, images: usize, stop: Arc<AtomicBool>) -> Bar {
        let terminal = std::io::stderr().is_terminal();
        let target = if quiet || !terminal {
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
        Bar {
            bar,
            log: (!quiet && !terminal).then(|| Log::new(Instant::now())),
            quiet,
            images,
            first: 0,
            warned: Vec::new(),
            stop,
        }
    }

    /// The next request's image 0 is image `first` of the run.
    pub fn request_starts_at(&mut self, first: usize) {
        self.first = first;
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Progress for Bar {
    fn stage(&mut self, stage: Stage) {
        let n = self.first + 1;
        self.bar.set_message(match stage {
            Stage::EncodingPrompt => "encoding prompt".to_string(),
            Stage::EncodingImage => "encoding image".to_string(),
            Stage::Sampling { image } => format!("image {}", n + image),
            Stage::Decoding { image } => format!("decoding {}", n + image),
        });
    }

    fn step(&mut self, step: &Step) -> Control {
        if self.bar.length().is_none() {
            self.bar.set_length((step.calls * self.images) as u64);
            self.bar.reset_eta();
        }
        self.bar.inc(1);
        let image = self.first + step.image;
        if let Some(line) = self
            .log
            .as_mut()
            .and_then(|log| log.due(Instant::now(), image, self.images, step.call, step.calls))
        {
            to_stderr(&line);
        }
        if self.cancelled() {
            Control::Stop
        } else {
            Control::Continue
        }
    }

    fn warning(&mut self, message: &str) {
        // Every request of a --prompt-file run repeats the same warnings.
        if self.quiet || self.warned.iter().any(|w| w == message) {
            return;
        }
        self.warned.push(message.to_string());
        self.bar.suspend(|| to_stderr(&format!("warning: {message}")));
    }

    fn cancelled(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// A line on stderr; a stderr that cannot take it is no reason to stop.
fn to_stderr(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The lines for a stderr that is not a terminal.
struct Log {
    start: Instant,
    last: Instant,
}

impl Log {
    fn new(now: Instant) -> Log {
        Log {
            start: now,
            last: now,
        }
    }

    /// After call `call` (0-based) of `calls` of image `image` of `images`:
    /// a line when [`LOG_EVERY`] has passed since the last one.
    fn due(
        &mut self,
        now: Instant,
        image: usize,
        images: usize,
        call: usize,
        calls: usize,
    ) -> Option<String> {
        if now.duration_since(self.last) < LOG_EVERY {
            return None;
        }
        self.last = now;
        let elapsed = now.duration_since(self.start);
        let done = (image * calls + call + 1) as f64;
        let left = (images * calls) as f64 - done;
        let eta = elapsed.mul_f64(left.max(0.0) / done);
        Some(format!(
            "image {}/{images}, step {}/{calls}, {} elapsed, ETA {}",
            image + 1,
            call + 1,
            clock(elapsed),
            clock(eta)
        ))
    }
}

/// `42 s`, `3 min 05 s`, `2 h 03 min`.
fn clock(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_every_few_seconds_with_position_and_eta() {
        let t0 = Instant::now();
        let mut log = Log::new(t0);
        assert_eq!(log.due(t0 + Duration::from_secs(4), 0, 4, 9, 10), None);
        // 20 of 40 calls in 10 s: 10 s to go.
        assert_eq!(
            log.due(t0 + Duration::from_secs(10), 1, 4, 9, 10).as_deref(),
            Some("image 2/4, step 10/10, 10 s elapsed, ETA 10 s")
        );
        assert_eq!(
            log.due(t0 + Duration::from_secs(14), 2, 4, 0, 10),
            None,
            "5 s since the last"
        );
        assert_eq!(
            log.due(t0 + Duration::from_secs(200), 2, 4, 4, 10).as_deref(),
            Some("image 3/4, step 5/10, 3 min 20 s elapsed, ETA 2 min 00 s")
        );
        assert_eq!(clock(Duration::from_secs(7385)), "2 h 03 min");
    }
}
