//! LoRAs on the server: `serve --lora FILE[:W]` merges files into every job, `--lora-dir
//! DIR` lets prompts name more with A1111's `<lora:NAME:WEIGHT>` tags (as A1111 clients
//! send them, in every API). The worker switches the pipeline to each job's set
//! (`Pipeline::set_loras`: a no-op when it is the previous job's).
//!
//! The folder is listed once at startup; a tag naming a file added later is a 422 that
//! lists the names the server knows.

use crate::lora::{specs_for_prompt, LoraDir, LoraSpec};
use crate::pipeline::Request;
use crate::Error;

use super::error::ApiError;

/// What `serve` was given.
#[derive(Default)]
pub struct ServerLoras {
    /// `--lora`: in every job.
    pub fixed: Vec<LoraSpec>,
    /// `--lora-dir`, listed.
    pub dir: Option<LoraDir>,
}

impl ServerLoras {
    /// The LoRAs `req` asks for; a tag that names nothing is a 422 on `prompt`.
    pub fn for_request(&self, req: &Request) -> Result<Vec<LoraSpec>, ApiError> {
        specs_for_prompt(&req.prompt, &req.negative_prompt, &self.fixed, self.dir.as_ref()).map_err(|e| {
            match e {
                Error::InvalidArgument { name, msg } => {
                    let field = if name == "--negative-prompt" {
                        "negative_prompt"
                    } else {
                        "prompt"
                    };
                    let msg = if name == "--prompt" || name == "--negative-prompt" {
                        msg.replace("needs --lora-dir", "needs the server started with --lora-dir")
                    } else {
                        msg
                    };
                    ApiError::field(field, msg)
                }
                e => ApiError::from(e),
            }
        })
    }
}

/// A LoRA file that fails to open or match the model, as the job's error: the file is the
/// server's, named by the request's tag.
pub fn file_error(e: Error) -> Error {
    match e {
        Error::BadFile { path, msg } => Error::invalid("--prompt", format!("LoRA {}: {msg}", path.display())),
        e => e,
    }
}
