//! The video diffusion model of AVDC / VideoAgent in candle: the pseudo-3D video U-Net with
//! its Perceiver text pooling ([`UNet`], [`UNetConfig`]), the v-prediction Gaussian diffusion
//! with its min-SNR loss ([`Diffusion`]), DDPM/DDIM sampling with classifier-free guidance
//! ([`SampleConfig`]), and checkpoint loading from safetensors or reference PyTorch files
//! ([`Checkpoint`]). It reproduces the reference PyTorch numbers (see `tests/parity.rs`).
//!
//! Training ([`train`], [`adam`]) and the saved model bundle ([`pipeline`]) build on these
//! types; plan refinement and critique are not here. Video tensors are `(b, 3, f, h, w)`;
//! [`video`] converts other layouts.

pub mod adam;
mod attention;
mod blocks;
pub mod checkpoint;
pub mod clip_text;
pub mod config;
mod conv;
pub mod device;
pub mod diffusion;
pub mod error;
mod fast_math;
pub mod flops;
mod fused;
mod im2col;
mod layers;
pub mod noise;
pub(crate) mod parallel;
mod perceiver;
pub mod pipeline;
pub mod precision;
pub mod refine_train;
pub mod sampler;
mod seeded_init;
#[cfg(test)]
pub(crate) mod test_tokenizer;
pub mod text;
mod torch_zip;
pub mod train;
pub mod unet;
pub mod video;

pub use checkpoint::{Checkpoint, expected_shapes, load_unet};
pub use config::UNetConfig;
pub use diffusion::{Diffusion, Loss, ddim_time_pairs, l2_reg, timestep_tensor};
pub use error::ModelError;
pub use noise::NoiseSource;
pub use pipeline::{ModelConfig, VideoModel};
pub use sampler::{Prompt, SampleConfig, SampleOutcome, SampleStep, Sampler};
pub use unet::UNet;
pub use video::Conditioning;
