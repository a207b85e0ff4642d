//! Loader tests: safetensors validation, torch pickles, embeddings, key maps,
//! family detection, diffusers folders. Fixtures come from
//! `tools/make_loader_fixtures.py` (torch / safetensors writers) and
//! `tools/dump_sd15_keys.py` (diffusers / transformers model definitions).

mod cli;
mod common;
mod embeddings;
mod family;
mod safetensors;
mod sd15;
mod torch;
