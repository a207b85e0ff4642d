//! Bad input and faults (issue 14), one module per area.

mod device;
mod flags;
mod inputs;
mod models;
