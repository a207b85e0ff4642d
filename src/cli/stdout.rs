//! Printing to stdout without panicking. `println!` panics when the reader
//! went away (`sd-wgpu ... | head -1`: EPIPE) or the disk is full
//! (`> /dev/full`: ENOSPC), and a panic would stop the images still to be
//! written.
//!
//! The rule: printing never stops the work. A reader that went away chose
//! to (`head` read what it wanted): the rest of the output is dropped and
//! the run still succeeds, as `cat`-like tools do. Any other failure lost
//! output the user asked for: the rest is dropped too, the work goes on,
//! and [`Stdout::finish`] turns it into the run's error (exit 1).

use std::fmt::Display;
use std::io::{ErrorKind, Write};

pub struct Stdout {
    state: State,
}

enum State {
    Open,
    /// The reader closed the pipe.
    Closed,
    Failed(std::io::Error),
}

impl Stdout {
    pub fn new() -> Stdout {
        Stdout { state: State::Open }
    }

    /// Prints `text` and a newline, flushed at once so that a reader sees
    /// each file name as soon as the file is written.
    pub fn line(&mut self, text: impl Display) {
        self.print(&format!("{text}\n"));
    }

    /// Prints `text` as it is (nothing once stdout has failed).
    pub fn print(&mut self, text: &str) {
        if !matches!(self.state, State::Open) {
            return;
        }
        let mut out = std::io::stdout().lock();
        if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            self.state = if e.kind() == ErrorKind::BrokenPipe {
                State::Closed
            } else {
                State::Failed(e)
            };
        }
    }

    /// The run's verdict on its output: an error unless everything was
    /// printed or the reader went away.
    pub fn finish(self) -> anyhow::Result<()> {
        match self.state {
            State::Failed(e) => Err(anyhow::anyhow!("writing to stdout: {e}")),
            State::Open | State::Closed => Ok(()),
        }
    }
}
