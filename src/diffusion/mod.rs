//! Diffusion maths and the models it drives: scheduler, prompt encoding, VAE, UNet and the img2img loop.
//! No file or device I/O here.

pub mod controlnet;
pub mod frame_path;
pub mod img2img;
pub mod noise;
pub mod scheduler;
pub mod text;
pub mod tokenizer_files;
pub mod unet;
pub mod vae;

pub use frame_path::{BatchMode, FramePath, Inputs};
pub use img2img::{Diffusion, MAX_GUIDANCE, Params, Prepared, StageTimes};
