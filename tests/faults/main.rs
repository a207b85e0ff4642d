//! Fault tests (issue 14): hostile and broken inputs, each refused with a clear
//! message, without panicking, and within a small time and memory bound.

mod inputs;
