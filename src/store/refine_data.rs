//! Refinement data on disk: for starts of the demonstration set, the expert's clip (the ground
//! truth), one or more plans the model generated from that start, and the critic's review of
//! each. `videoagent refine-data` writes it; `videoagent train --refine-data` reads it.
//!
//! ```text
//! DIR/refine-data.json                    header: format, version, model, sampler, generations
//! DIR/samples/<task>-<view>-<seed>/       one folder per start; appears whole (staged + rename)
//!     sample.json                         task, view, seed, instruction, every generation's
//!                                         prompt, noise seed and review (verdict, feedback,
//!                                         findings)
//!     truth/00.png .. 07.png              the expert clip from the start (start frame first)
//!     gen0/00.png .. 06.png               generation 0: planned from the start frame
//!     gen1/00.png .. 06.png               generation 1: refines generation 0 with its critique
//! ```
//!
//! All frames are at the model's frame size. A start's folder is assembled under a temporary
//! name and renamed into place when complete, so a killed run leaves only whole samples; a
//! rerun with the same header skips the starts already there. This module only stores and
//! reads; generating the plans lives in `agent::refine_data`.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::atomic::{self, IoError, io_error};
use crate::critic::Review;
use crate::env::Rgb8Image;

pub const FORMAT: &str = "videoagent.refine-data";
pub const VERSION: u32 = 1;
pub const HEADER_FILE: &str = "refine-data.json";
pub const SAMPLES_DIR: &str = "samples";
const SAMPLE_FILE: &str = "sample.json";

#[derive(Debug, thiserror::Error)]
pub enum RefineDataError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("not refinement data: {problem} ({path})")]
    Invalid { problem: String, path: PathBuf },
    #[error("image: {source} ({path})")]
    Image {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    #[error(
        "the folder holds refinement data made with other settings ({problem}); use another --out ({path})"
    )]
    Mismatch { problem: String, path: PathBuf },
}

/// How the data was made; a rerun into the same folder must use the same settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefineDataHeader {
    pub format: String,
    pub version: u32,
    pub world: String,
    /// The model folder that generated the plans.
    pub model: String,
    /// Side of every stored frame (the model's frame size).
    pub frame_size: u32,
    /// DDIM steps of every generation.
    pub sampler_steps: usize,
    /// Generations per start (1, or 2 when the second refines the first).
    pub generations: usize,
    /// The critic that reviewed the plans.
    pub critic: String,
    /// Base of the noise seeds.
    pub seed: u64,
}

impl RefineDataHeader {
    pub fn new(
        world: &str,
        model: &str,
        frame_size: u32,
        sampler_steps: usize,
        generations: usize,
        critic: &str,
        seed: u64,
    ) -> Self {
        Self {
            format: FORMAT.to_owned(),
            version: VERSION,
            world: world.to_owned(),
            model: model.to_owned(),
            frame_size,
            sampler_steps,
            generations,
            critic: critic.to_owned(),
            seed,
        }
    }
}

/// One generated plan's record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenerationMeta {
    /// The text it was generated from.
    pub prompt: String,
    pub seed: u64,
    pub review: Review,
}

/// What `sample.json` holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefineSampleMeta {
    pub task: String,
    pub view: usize,
    pub view_name: String,
    /// The demonstration's seed.
    pub seed: u64,
    pub instruction: String,
    pub generations: Vec<GenerationMeta>,
}

impl RefineSampleMeta {
    /// The folder name of this start under `samples/`.
    pub fn name(&self) -> String {
        sample_name(&self.task, &self.view_name, self.seed)
    }
}

/// Folder name of a start: `<task>-<view>-<seed:06>`.
pub fn sample_name(task: &str, view_name: &str, seed: u64) -> String {
    format!("{task}-{view_name}-{seed:06}")
}

/// One start with its ground truth and generations, in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct RefineSample {
    pub meta: RefineSampleMeta,
    /// The expert's clip: the start frame, then the 7 frames a plan should show.
    pub truth: Vec<Rgb8Image>,
    /// `generations[i]` is the plan of `meta.generations[i]`.
    pub generations: Vec<Vec<Rgb8Image>>,
}

/// A refinement-data folder opened for writing or reading.
#[derive(Clone, Debug)]
pub struct RefineData {
    pub root: PathBuf,
    pub header: RefineDataHeader,
}

fn invalid(problem: impl Into<String>, path: &Path) -> RefineDataError {
    RefineDataError::Invalid {
        problem: problem.into(),
        path: path.to_owned(),
    }
}

fn write_frames(dir: &Path, frames: &[Rgb8Image]) -> Result<(), RefineDataError> {
    fs::create_dir_all(dir).map_err(io_error("cannot create folder", dir))?;
    for (i, frame) in frames.iter().enumerate() {
        let p = dir.join(format!("{i:02}.png"));
        frame
            .to_image()
            .save(&p)
            .map_err(|source| RefineDataError::Image { path: p, source })?;
    }
    Ok(())
}

fn read_frames(dir: &Path, count: usize, size: u32) -> Result<Vec<Rgb8Image>, RefineDataError> {
    (0..count)
        .map(|i| {
            let p = dir.join(format!("{i:02}.png"));
            let img = image::open(&p)
                .map_err(|source| RefineDataError::Image {
                    path: p.clone(),
                    source,
                })?
                .to_rgb8();
            if img.width() != size || img.height() != size {
                return Err(invalid(
                    format!(
                        "frame is {}x{}, the header says {size}x{size}",
                        img.width(),
                        img.height()
                    ),
                    &p,
                ));
            }
            Ok(Rgb8Image {
                width: size,
                height: size,
                pixels: img.into_raw(),
            })
        })
        .collect()
}

/// `field: saved X, asked for Y` for every field that differs.
fn header_differences(saved: &RefineDataHeader, asked: &RefineDataHeader) -> String {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(saved), serde_json::to_value(asked))
    else {
        return "the headers differ".to_owned();
    };
    a.iter()
        .filter(|(k, v)| b.get(k.as_str()) != Some(v))
        .map(|(k, v)| {
            let other = b
                .get(k.as_str())
                .map_or("nothing".to_owned(), ToString::to_string);
            format!("{k}: saved {v}, asked for {other}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl RefineData {
    /// Starts a folder, or reopens one written with the same header (to continue it).
    pub fn create_or_continue(
        root: &Path,
        header: RefineDataHeader,
    ) -> Result<Self, RefineDataError> {
        let path = root.join(HEADER_FILE);
        if path.exists() {
            let found = Self::open(root)?;
            if found.header != header {
                let problem = header_differences(&found.header, &header);
                return Err(RefineDataError::Mismatch {
                    problem,
                    path: path.clone(),
                });
            }
            return Ok(found);
        }
        if root.is_dir() {
            let mut entries =
                fs::read_dir(root).map_err(io_error("cannot read output folder", root))?;
            if entries.next().is_some() {
                return Err(invalid(
                    "the folder is not empty and has no refine-data.json",
                    root,
                ));
            }
        }
        let samples = root.join(SAMPLES_DIR);
        fs::create_dir_all(&samples).map_err(io_error("cannot create folder", &samples))?;
        atomic::write_json(&path, &header).map_err(io_error("cannot write header", &path))?;
        Ok(Self {
            root: root.to_owned(),
            header,
        })
    }

    /// Opens a folder written by [`RefineData::create_or_continue`].
    pub fn open(root: &Path) -> Result<Self, RefineDataError> {
        let path = root.join(HEADER_FILE);
        let bytes = fs::read(&path).map_err(io_error("cannot read header", &path))?;
        let header: RefineDataHeader = serde_json::from_slice(&bytes)
            .map_err(|e| invalid(format!("malformed header: {e}"), &path))?;
        if header.format != FORMAT || header.version != VERSION {
            return Err(invalid(
                format!(
                    "format '{}' v{} (expected '{FORMAT}' v{VERSION})",
                    header.format, header.version
                ),
                &path,
            ));
        }
        Ok(Self {
            root: root.to_owned(),
            header,
        })
    }

    fn sample_dir(&self, name: &str) -> PathBuf {
        self.root.join(SAMPLES_DIR).join(name)
    }

    /// Whether the start called `name` (see [`sample_name`]) is already stored.
    pub fn contains(&self, name: &str) -> bool {
        self.sample_dir(name).join(SAMPLE_FILE).is_file()
    }

    /// Names of the stored starts, sorted (temporary folders of unfinished writes skipped).
    pub fn names(&self) -> Result<Vec<String>, RefineDataError> {
        let dir = self.root.join(SAMPLES_DIR);
        let mut names = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_error("cannot list samples", &dir))? {
            let entry = entry.map_err(io_error("cannot list samples", &dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && self.contains(&name) {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// Writes one start atomically (replacing nothing: a stored start is an error).
    pub fn write(&self, sample: &RefineSample) -> Result<(), RefineDataError> {
        let name = sample.meta.name();
        let dest = self.sample_dir(&name);
        if sample.truth.len() != super::dataset::CLIP_FRAMES
            || sample.generations.len() != sample.meta.generations.len()
        {
            return Err(invalid(
                format!(
                    "{} truth frames and {} generations for {} records",
                    sample.truth.len(),
                    sample.generations.len(),
                    sample.meta.generations.len()
                ),
                &dest,
            ));
        }
        if self.contains(&name) {
            return Err(invalid("this start is already stored", &dest));
        }
        let staged = atomic::StagedDir::new(&dest)
            .map_err(io_error("cannot create sample folder", &dest))?;
        write_frames(&staged.path().join("truth"), &sample.truth)?;
        for (i, frames) in sample.generations.iter().enumerate() {
            write_frames(&staged.path().join(format!("gen{i}")), frames)?;
        }
        let meta_path = staged.path().join(SAMPLE_FILE);
        atomic::write_json(&meta_path, &sample.meta)
            .map_err(io_error("cannot write sample record", &meta_path))?;
        staged
            .commit()
            .map_err(io_error("cannot move sample into place", &dest))?;
        Ok(())
    }

    /// Reads the start called `name`.
    pub fn read(&self, name: &str) -> Result<RefineSample, RefineDataError> {
        let dir = self.sample_dir(name);
        let path = dir.join(SAMPLE_FILE);
        let bytes = fs::read(&path).map_err(io_error("cannot read sample record", &path))?;
        let meta: RefineSampleMeta = serde_json::from_slice(&bytes)
            .map_err(|e| invalid(format!("malformed sample record: {e}"), &path))?;
        let size = self.header.frame_size;
        let truth = read_frames(&dir.join("truth"), super::dataset::CLIP_FRAMES, size)?;
        let generations = (0..meta.generations.len())
            .map(|i| read_frames(&dir.join(format!("gen{i}")), truth.len() - 1, size))
            .collect::<Result<_, _>>()?;
        Ok(RefineSample {
            meta,
            truth,
            generations,
        })
    }

    /// Every stored start, in name order.
    pub fn read_all(&self) -> Result<Vec<RefineSample>, RefineDataError> {
        self.names()?.iter().map(|n| self.read(n)).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::critic::Verdict;

    fn frame(value: u8) -> Rgb8Image {
        Rgb8Image {
            width: 4,
            height: 4,
            pixels: (0..48).map(|i| value.wrapping_add(i)).collect(),
        }
    }

    fn sample(seed: u64) -> RefineSample {
        let review = |verdict| Review {
            verdict,
            feedback: "Task incomplete. Move the gripper further.".into(),
            findings: Vec::new(),
            latency: Duration::ZERO,
        };
        RefineSample {
            meta: RefineSampleMeta {
                task: "push".into(),
                view: 1,
                view_name: "front".into(),
                seed,
                instruction: "push the block".into(),
                generations: vec![
                    GenerationMeta {
                        prompt: "push the block".into(),
                        seed: 10,
                        review: review(Verdict::Reject),
                    },
                    GenerationMeta {
                        prompt: "push the block. Task incomplete.".into(),
                        seed: 11,
                        review: review(Verdict::Accept),
                    },
                ],
            },
            truth: (0..8).map(frame).collect(),
            generations: vec![(10..17).map(frame).collect(), (20..27).map(frame).collect()],
        }
    }

    fn header() -> RefineDataHeader {
        RefineDataHeader::new("tabletop", "m", 4, 10, 2, "perception", 0)
    }

    #[test]
    fn samples_round_trip_and_a_rerun_continues() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("refine");
        let data = RefineData::create_or_continue(&root, header()).expect("create");
        let a = sample(3);
        data.write(&a).expect("write");
        assert!(data.contains("push-front-000003"));
        assert!(data.write(&a).is_err(), "a stored start is not overwritten");
        // A half-written start (a killed run) is invisible.
        fs::create_dir_all(root.join("samples/.push-front-000009.123.0.tmp/truth")).expect("mkdir");
        fs::create_dir_all(root.join("samples/push-front-000010/truth")).expect("mkdir");

        let again = RefineData::create_or_continue(&root, header()).expect("continue");
        assert_eq!(again.names().expect("names"), vec!["push-front-000003"]);
        again.write(&sample(4)).expect("write");
        let all = RefineData::open(&root)
            .expect("open")
            .read_all()
            .expect("read");
        assert_eq!(all.len(), 2);
        assert_eq!(all[0], a, "round trip");
        assert_eq!(all[1].meta.seed, 4);

        let other = RefineDataHeader {
            sampler_steps: 20,
            ..header()
        };
        let err = RefineData::create_or_continue(&root, other).expect_err("settings differ");
        assert!(matches!(err, RefineDataError::Mismatch { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("sampler_steps: saved 10, asked for 20"),
            "{err}"
        );
    }

    #[test]
    fn damaged_folders_are_refused_with_their_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("stray.txt"), b"x").expect("write");
        assert!(RefineData::create_or_continue(dir.path(), header()).is_err());
        let root = dir.path().join("r");
        let data = RefineData::create_or_continue(&root, header()).expect("create");
        data.write(&sample(1)).expect("write");
        let png = root.join("samples/push-front-000001/gen1/03.png");
        fs::write(&png, b"not a png").expect("write");
        let err = data.read_all().expect_err("damaged frame");
        assert!(err.to_string().contains("03.png"), "{err}");
        fs::write(root.join(HEADER_FILE), b"{").expect("write");
        let err = RefineData::open(&root).expect_err("damaged header");
        assert!(err.to_string().contains("malformed"), "{err}");
    }
}
