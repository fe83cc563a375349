//! A plan on disk: the start frame and generated frames as PNG, an animated GIF, a strip, and
//! `plan.json` with everything needed to reproduce it.
//!
//! ```text
//! DIR/plan.json  DIR/plan.gif  DIR/strip.png  DIR/frames/00.png (start) .. 07.png
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::env::Rgb8Image;

/// How the plan was sampled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SamplerRecord {
    /// `ddim` or `ddpm`.
    pub kind: String,
    pub steps: usize,
    pub guidance: f64,
}

/// `plan.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanRecord {
    pub world: String,
    pub task: String,
    pub view: usize,
    pub instruction: String,
    /// Seed of the world's start state.
    pub env_seed: u64,
    /// Seed of the sampler's noise.
    pub sample_seed: u64,
    /// The model folder used.
    pub model: String,
    pub device: String,
    pub sampler: SamplerRecord,
    pub load_ms: f64,
    pub sample_ms: f64,
    /// Frame files, start frame first.
    pub frames: Vec<String>,
}

/// Writes the plan folder (each file atomically; `plan.json` last).
pub fn write_plan(
    dir: &Path,
    record: &PlanRecord,
    start: &Rgb8Image,
    plan: &[Rgb8Image],
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir.join("frames"))?;
    let mut all = vec![crate::model::pipeline::resize(
        start,
        plan.first().map_or(start.width, |f| f.width),
    )];
    all.extend(plan.iter().cloned());
    for (i, f) in all.iter().enumerate() {
        crate::viz::write_png(&dir.join(format!("frames/{i:02}.png")), &f.to_image())?;
    }
    crate::viz::write_gif(&dir.join("plan.gif"), &all, 250, 4)?;
    let strip = crate::viz::upscale(
        &crate::viz::grid(std::slice::from_ref(&all), 1, [255, 255, 255]),
        4,
    );
    crate::viz::write_png(&dir.join("strip.png"), &strip)?;
    crate::store::atomic::write_json(&dir.join("plan.json"), record)
}
