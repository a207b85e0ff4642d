//! The one error type of the library. The binary adds context with `anyhow` at its edge.
//!
//! Messages say what was expected, what was found, and what to do about it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file that could not be read or parsed as the format it claims to be.
    #[error("{path}: {msg}")]
    BadFile { path: PathBuf, msg: String },

    /// A tensor whose shape does not match what the model or op expects.
    #[error("shape mismatch for {what}: expected {expected:?}, found {found:?}")]
    Shape {
        what: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    /// Weights the model needs that the checkpoint does not have (or has in excess).
    #[error("{0}")]
    Weights(String),

    /// A checkpoint of a model family that this build cannot run.
    #[error("unsupported model: {0}")]
    Unsupported(String),

    /// A user-supplied value that is out of range or malformed (flag, prompt, size...).
    #[error("invalid argument {name}: {msg}")]
    InvalidArgument { name: String, msg: String },

    /// No adapter, or an adapter without what we need.
    #[error("GPU unavailable: {0}")]
    NoAdapter(String),

    /// A WGSL shader that failed to compile or validate (a bug in sd-wgpu).
    #[error("shader {name}: {msg}")]
    Shader { name: String, msg: String },

    /// The GPU ran out of memory.
    #[error("GPU out of memory: {0}")]
    OutOfMemory(String),

    /// The GPU device was lost (driver reset, hang, removal).
    #[error("GPU device lost: {0}")]
    DeviceLost(String),

    /// Any other error reported asynchronously by wgpu.
    #[error("GPU error: {0}")]
    Gpu(String),

    /// A result contained NaN or infinity.
    #[error("non-finite values in {0}")]
    NonFinite(String),

    /// The caller asked to stop (progress callback returned false / cancel flag set).
    #[error("cancelled")]
    Cancelled,

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Shorthand for a [`Error::BadFile`].
    pub fn bad_file(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::BadFile {
            path: path.into(),
            msg: msg.into(),
        }
    }

    /// Shorthand for an [`Error::InvalidArgument`].
    pub fn invalid(name: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::InvalidArgument {
            name: name.into(),
            msg: msg.into(),
        }
    }

    /// Wraps an I/O error with what we were doing (usually the path).
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
