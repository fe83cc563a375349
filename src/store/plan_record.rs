//! A plan on disk: the start frame and generated frames as PNG, an animated GIF, a strip, and
//! `plan.json` with everything needed to reproduce it.
//!
//! ```text
//! DIR/plan.json  DIR/plan.gif  DIR/strip.png  DIR/frames/00.png (start) .. 07.png
//! DIR/iterations/NN/{frames/*.png, plan.gif, strip.png, critique.txt}   (with --refine)
//! DIR/iterations.png                      every iteration, one row each, critique under it (with --refine)
//! ```
//!
//! With refinement the top-level frames are the chosen iteration's.

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
    /// The U-Net's numeric precision (plans from before it was recorded: f32).
    #[serde(default)]
    pub precision: crate::model::precision::Precision,
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
    /// The critic's reviews and every refinement, when a critic or refinement was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refinement: Option<RefinementRecord>,
}

/// The refinement loop as run for this plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefinementRecord {
    pub critic: String,
    pub max_refinements: usize,
    /// Index of the iteration shown at the top level (`None` if cancelled before any).
    pub chosen: Option<usize>,
    /// accepted, exhausted, critic_unavailable or cancelled.
    pub stop: String,
    pub iterations: Vec<IterationRecord>,
}

/// One generated plan of the loop and its critique.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IterationRecord {
    pub index: usize,
    /// Folder of its files, relative to the plan folder.
    pub dir: String,
    /// Text the model was conditioned on (instruction, then the previous critique).
    pub prompt: String,
    pub sample_seed: u64,
    pub sample_ms: f64,
    pub review: crate::critic::Review,
}

/// Writes the plan folder (each file atomically; `plan.json` last).
pub fn write_plan(
    dir: &Path,
    record: &PlanRecord,
    start: &Rgb8Image,
    plan: &[Rgb8Image],
) -> std::io::Result<()> {
    write_frames(dir, start, plan)?;
    crate::store::atomic::write_json(&dir.join("plan.json"), record)
}

/// Writes one iteration of the loop under `dir/iterations/NN` (frames, GIF, strip and the
/// critique as text) and returns that folder relative to `dir`.
pub fn write_iteration(
    dir: &Path,
    index: usize,
    start: &Rgb8Image,
    plan: &[Rgb8Image],
    critique: &str,
) -> std::io::Result<String> {
    let rel = format!("iterations/{index:02}");
    let sub = dir.join(&rel);
    write_frames(&sub, start, plan)?;
    crate::store::atomic::write_file(
        &sub.join("critique.txt"),
        format!("{critique}\n").as_bytes(),
    )?;
    Ok(rel)
}

/// Writes `dir/iterations.png`: the start and each iteration's frames, one row per iteration,
/// with its caption (the critique) under it.
pub fn write_iterations_sheet(
    dir: &Path,
    start: &Rgb8Image,
    plans: &[&[Rgb8Image]],
    captions: &[String],
) -> std::io::Result<()> {
    let rows: Vec<Vec<Rgb8Image>> = plans.iter().map(|p| with_start(start, p)).collect();
    let sheet = crate::viz::captioned_rows(&rows, captions, 4);
    crate::viz::write_png(&dir.join("iterations.png"), &sheet)
}

fn with_start(start: &Rgb8Image, plan: &[Rgb8Image]) -> Vec<Rgb8Image> {
    let mut all = vec![crate::model::pipeline::resize(
        start,
        plan.first().map_or(start.width, |f| f.width),
    )];
    all.extend(plan.iter().cloned());
    all
}

/// Frames (start first), GIF and strip of one plan.
fn write_frames(dir: &Path, start: &Rgb8Image, plan: &[Rgb8Image]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir.join("frames"))?;
    let all = with_start(start, plan);
    for (i, f) in all.iter().enumerate() {
        crate::viz::write_png(&dir.join(format!("frames/{i:02}.png")), &f.to_image())?;
    }
    crate::viz::write_gif(&dir.join("plan.gif"), &all, 250, 4)?;
    let strip = crate::viz::upscale(
        &crate::viz::grid(std::slice::from_ref(&all), 1, [255, 255, 255]),
        4,
    );
    crate::viz::write_png(&dir.join("strip.png"), &strip)
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
        path: json.clone(),
    })?;
    let names = record.frames.iter();
    let dirs = record
        .refinement
        .iter()
        .flat_map(|r| r.iterations.iter().map(|it| &it.dir));
    if let Some(bad) = names.chain(dirs).find(|n| !super::relative::is_inside(n)) {
        return Err(ReadPlanError::Json {
            reason: format!("'{bad}' is not a name inside the plan folder"),
            path: json,
        });
    }
    let frames = record
        .frames
        .iter()
        .map(|name| read_frame(&dir.join(name)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((record, frames))
}

/// Frames of every refinement iteration of a plan read by [`read_plan`], start frame first,
/// in the record's order; a plan made without the loop is one iteration: `frames` itself.
pub fn read_iterations(
    dir: &Path,
    record: &PlanRecord,
    frames: Vec<Rgb8Image>,
) -> Result<Vec<Vec<Rgb8Image>>, ReadPlanError> {
    let Some(refinement) = &record.refinement else {
        return Ok(vec![frames]);
    };
    refinement
        .iterations
        .iter()
        .map(|it| {
            record
                .frames
                .iter()
                .map(|name| read_frame(&dir.join(&it.dir).join(name)))
                .collect()
        })
        .collect()
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

/// Largest side of an image accepted as a first frame (decoding more is a mistake, not a plan).
pub const MAX_FIRST_FRAME_SIDE: u32 = 8192;

/// Reads a first frame the user chose: centre-cropped to a square and resized to `size`.
pub fn read_first_frame(path: &Path, size: u32) -> Result<Rgb8Image, ReadPlanError> {
    let bad = |reason: String| ReadPlanError::Image {
        reason,
        path: path.to_owned(),
    };
    let (width, height) = image::image_dimensions(path).map_err(|e| bad(e.to_string()))?;
    if width.max(height) > MAX_FIRST_FRAME_SIDE || width == 0 || height == 0 {
        return Err(bad(format!(
            "{width}x{height} pixels; a first frame must be 1 to {MAX_FIRST_FRAME_SIDE} pixels a side"
        )));
    }
    let frame = read_frame(path)?;
    let side = width.min(height);
    let (x0, y0) = ((width - side) / 2, (height - side) / 2);
    let mut pixels = Vec::with_capacity((side * side * 3) as usize);
    for y in y0..y0 + side {
        for x in x0..x0 + side {
            pixels.extend(frame.pixel(x, y));
        }
    }
    let square = Rgb8Image {
        width: side,
        height: side,
        pixels,
    };
    Ok(crate::model::pipeline::resize(&square, size))
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
                precision: crate::model::precision::Precision::Bf16,
            },
            load_ms: 1.0,
            sample_ms: 2.0,
            frames: (0..3).map(|i| format!("frames/{i:02}.png")).collect(),
            refinement: None,
        };
        write_plan(dir.path(), &record, &frame(9), &[frame(1), frame(2)]).expect("write");
        let (back, frames) = read_plan(dir.path()).expect("read");
        assert_eq!(back, record);
        assert_eq!(frames, vec![frame(9), frame(1), frame(2)]);
        // Plans written before the precision was recorded were made in f32.
        let mut old = serde_json::to_value(&record).expect("json");
        old["sampler"]
            .as_object_mut()
            .expect("sampler")
            .remove("precision");
        let old: PlanRecord = serde_json::from_value(old).expect("old plan.json");
        assert_eq!(
            old.sampler.precision,
            crate::model::precision::Precision::F32
        );
        std::fs::write(dir.path().join("frames/01.png"), b"not a png").expect("damage");
        let err = read_plan(dir.path()).expect_err("damaged frame");
        assert!(err.to_string().contains("01.png"), "{err}");
        std::fs::write(dir.path().join("plan.json"), b"{").expect("damage");
        assert!(matches!(
            read_plan(dir.path()),
            Err(ReadPlanError::Json { .. })
        ));
    }

    #[test]
    fn first_frames_are_cropped_square_and_resized_and_junk_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wide.png");
        let mut img = image::RgbImage::new(40, 20);
        for (x, _, p) in img.enumerate_pixels_mut() {
            *p = image::Rgb([if x < 10 { 255 } else { 0 }, 0, 0]);
        }
        img.save(&path).expect("png");
        let frame = read_first_frame(&path, 8).expect("frame");
        assert_eq!((frame.width, frame.height), (8, 8));
        assert!(
            frame.pixels.chunks(3).all(|p| p[0] == 0),
            "the red left margin is cropped"
        );
        let junk = dir.path().join("junk.png");
        std::fs::write(&junk, b"not an image").expect("junk");
        let err = read_first_frame(&junk, 8).expect_err("junk");
        assert!(err.to_string().contains("junk.png"), "{err}");
    }
}
