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

/// Why a plan folder could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadPlanError {
    #[error("cannot read {path}: {source}")]
    Io {
        source: std::io::Error,
        path: std::path::PathBuf,
    },
    #[error("malformed plan.json ({reason}): {path}")]
    Json {
        reason: String,
        path: std::path::PathBuf,
    },
    #[error("not a readable image ({reason}): {path}")]
    Image {
        reason: String,
        path: std::path::PathBuf,
    },
}

/// Reads a folder written by [`write_plan`]: the record and its frames, start frame first.
pub fn read_plan(dir: &Path) -> Result<(PlanRecord, Vec<Rgb8Image>), ReadPlanError> {
    let json = dir.join("plan.json");
    let bytes = std::fs::read(&json).map_err(|source| ReadPlanError::Io {
        source,
        path: json.clone(),
    })?;
    let record: PlanRecord = serde_json::from_slice(&bytes).map_err(|e| ReadPlanError::Json {
        reason: e.to_string(),
        path: json,
    })?;
    let frames = record
        .frames
        .iter()
        .map(|name| read_frame(&dir.join(name)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((record, frames))
}

/// Reads an RGB frame from an image file.
pub fn read_frame(path: &Path) -> Result<Rgb8Image, ReadPlanError> {
    let image = image::open(path).map_err(|e| ReadPlanError::Image {
        reason: e.to_string(),
        path: path.to_owned(),
    })?;
    let rgb = image.to_rgb8();
    Ok(Rgb8Image {
        width: rgb.width(),
        height: rgb.height(),
        pixels: rgb.into_raw(),
    })
}

#[cfg(test)]
mod read_tests {
    use super::*;

    #[test]
    fn written_plans_read_back_and_damage_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let frame = |v: u8| Rgb8Image {
            width: 4,
            height: 4,
            pixels: vec![v; 48],
        };
        let record = PlanRecord {
            world: "tabletop".into(),
            task: "push".into(),
            view: 1,
            instruction: "push the block".into(),
            env_seed: 3,
            sample_seed: 3,
            model: "m".into(),
            device: "CPU".into(),
            sampler: SamplerRecord {
                kind: "ddim".into(),
                steps: 10,
                guidance: 0.0,
            },
            load_ms: 1.0,
            sample_ms: 2.0,
            frames: (0..3).map(|i| format!("frames/{i:02}.png")).collect(),
        };
        write_plan(dir.path(), &record, &frame(9), &[frame(1), frame(2)]).expect("write");
        let (back, frames) = read_plan(dir.path()).expect("read");
        assert_eq!(back, record);
        assert_eq!(frames, vec![frame(9), frame(1), frame(2)]);
        std::fs::write(dir.path().join("frames/01.png"), b"not a png").expect("damage");
        let err = read_plan(dir.path()).expect_err("damaged frame");
        assert!(err.to_string().contains("01.png"), "{err}");
        std::fs::write(dir.path().join("plan.json"), b"{").expect("damage");
        assert!(matches!(read_plan(dir.path()), Err(ReadPlanError::Json { .. })));
    }
}
