//! Bad input and faults (issue 14), one module per area.

mod flags;
mod models;
