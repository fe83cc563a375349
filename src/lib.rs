//! VideoAgent Studio: the library behind the `videoagent` binary and the studio.
//!
//! Modules follow the data flow of VideoAgent (arXiv 2410.10076):
//! [`env`] simulates worlds and runs experts, [`model`] is the video diffusion model,
//! [`critic`] judges plans, [`agent`] measures plans and runs the refinement loop,
//! [`store`] keeps datasets and other artefacts on disk, [`app`] is the egui studio on top.

pub mod agent;
pub mod app;
pub mod bench;
pub mod critic;
pub mod env;
pub mod model;
pub mod store;
pub mod viz;
