//! Fault and misuse cases of issue 14, each reproduced and checked against
//! the fixed behaviour. One module per area.

mod device;
