//! Ctrl-C during a generation: the first SIGINT asks the pipeline to stop at
//! the next step boundary (images already written stay, the one being
//! decoded is still written), and the run exits with status 130 saying how
//! many images were written; a second SIGINT exits at once with 130.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use signal_hook::consts::SIGINT;

/// The shell's status for a process ended by SIGINT (128 + 2).
pub const EXIT_STATUS: u8 = 130;

/// Installs the handlers and returns the flag the first SIGINT sets (a
/// [`sd_wgpu::pipeline::Progress`] that stops once set).
pub fn install() -> anyhow::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    // Registered first, so that it sees the flag only a previous SIGINT set:
    // then it exits from the signal handler itself, whatever the program is doing.
    signal_hook::flag::register_conditional_shutdown(SIGINT, EXIT_STATUS.into(), flag.clone())?;
    signal_hook::flag::register(SIGINT, flag.clone())?;
    Ok(flag)
}

/// A run stopped by Ctrl-C; `main` exits with [`EXIT_STATUS`].
#[derive(Debug)]
pub struct Interrupted {
    pub written: usize,
    pub total: usize,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "interrupted: {} of {} image{} written",
            self.written,
            self.total,
            if self.total == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for Interrupted {}
