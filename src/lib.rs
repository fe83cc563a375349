//! VideoAgent Studio: the library behind the `videoagent` binary and the studio.
//!
//! Modules follow the data flow of VideoAgent (arXiv 2410.10076):
//! [`env`] simulates worlds and runs experts, [`model`] is the video diffusion model,
//! [`critic`] judges plans, [`agent`] measures plans and runs the refinement loop,
//! [`store`] keeps datasets and other artefacts on disk.

pub mod agent;
pub mod bench;
pub mod critic;
pub mod env;
pub mod model;
pub mod store;
pub mod viz;
