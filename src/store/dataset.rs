//! The demonstration dataset on disk (format documented in `docs/DATASET.md`):
//!
//! ```text
//! DIR/manifest.json                       format, world, frame size, every episode
//! DIR/episodes/<task>/<view>/<seed>/      one folder per episode
//!     meta.json                           task, view, seed, instruction(s), success, labels
//!     actions.json  states.json           per step
//!     rgb/00000.png ...  seg/00000.png    frames and per-pixel label ids
//! ```
//!
//! Writing goes to a staged folder renamed into place at the end, so a dataset either is
//! complete or does not exist. Reading validates the manifest and yields 8-frame clips.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::atomic::{IoError, io_error};
use crate::env::demo::{Demonstration, StateRecord};
use crate::env::{Action, Rgb8Image};

pub const FORMAT: &str = "videoagent.dataset";
pub const VERSION: u32 = 1;
/// Frames per training clip: frame 0 and the 7 frames the model generates.
pub const CLIP_FRAMES: usize = 8;
/// Frame sides a manifest may declare (`videoagent dataset` writes 16 to 256).
pub const MIN_FRAME_SIZE: u32 = 1;
pub const MAX_FRAME_SIZE: u32 = 4096;
/// Most frames an episode may declare: far above any recorded episode (a few hundred steps);
/// a damaged count would otherwise drive loops and index arithmetic.
pub const MAX_EPISODE_FRAMES: usize = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("not a dataset: {problem} ({path})")]
    Invalid { problem: String, path: PathBuf },
    #[error("cannot read image: {source} ({path})")]
    Image {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    #[error("output folder exists and is not empty; choose another or remove it ({path})")]
    NotEmpty { path: PathBuf },
}

/// What the manifest says about one episode.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpisodeMeta {
    /// Folder relative to the dataset root.
    pub dir: String,
    pub task: String,
    pub view: usize,
    pub view_name: String,
    pub seed: u64,
    /// The canonical instruction.
    pub instruction: String,
    /// The canonical instruction and its paraphrases (training samples among them).
    pub instructions: Vec<String>,
    pub success: bool,
    pub frames: usize,
    /// Segmentation label names by id.
    pub labels: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub world: String,
    pub frame_size: u32,
    pub episodes: Vec<EpisodeMeta>,
}

/// A training sample: [`CLIP_FRAMES`] frames of one episode and its instructions.
#[derive(Clone, Debug)]
pub struct Clip {
    pub frames: Vec<Rgb8Image>,
    pub episode: usize,
}

/// Indices of a clip starting at `start` in an episode of `n` frames: the start, then frames
/// spread evenly to the last one (`start + floor(i * (n - 1 - start) / 7)`, as the reference).
pub fn clip_indices(n: usize, start: usize) -> Vec<usize> {
    let last = n.saturating_sub(1);
    let start = start.min(last);
    let span = last - start;
    // In u128: `i * span` overflows usize for spans near usize::MAX.
    (0..CLIP_FRAMES)
        .map(|i| start + (i as u128 * span as u128 / (CLIP_FRAMES as u128 - 1)) as usize)
        .collect()
}

/// Writes demonstrations into a new dataset folder, atomically.
pub struct DatasetWriter {
    staged: super::atomic::StagedDir,
    dest: PathBuf,
    manifest: Manifest,
}

impl DatasetWriter {
    /// Starts a dataset at `dest`, which must be absent or an empty folder.
    pub fn create(dest: &Path, world: &str, frame_size: u32) -> Result<Self, DatasetError> {
        if dest.exists() {
            let mut entries =
                fs::read_dir(dest).map_err(io_error("cannot read output folder", dest))?;
            if entries.next().is_some() {
                return Err(DatasetError::NotEmpty {
                    path: dest.to_owned(),
                });
            }
        }
        let staged = super::atomic::StagedDir::new(dest)
            .map_err(io_error("cannot create output folder", dest))?;
        Ok(Self {
            staged,
            dest: dest.to_owned(),
            manifest: Manifest {
                format: FORMAT.to_owned(),
                version: VERSION,
                world: world.to_owned(),
                frame_size,
                episodes: Vec::new(),
            },
        })
    }

    /// The staged folder episodes are written into with [`write_episode`]; pair each with
    /// [`DatasetWriter::register`] (lets several threads write episodes at once).
    pub fn root(&self) -> &Path {
        self.staged.path()
    }

    pub fn register(&mut self, meta: EpisodeMeta) {
        self.manifest.episodes.push(meta);
    }

    /// Writes the manifest and moves the dataset into place.
    pub fn finish(mut self) -> Result<Manifest, DatasetError> {
        self.manifest
            .episodes
            .sort_by(|a, b| (&a.task, a.view, a.seed).cmp(&(&b.task, b.view, b.seed)));
        let path = self.staged.path().join("manifest.json");
        super::atomic::write_json(&path, &self.manifest)
            .map_err(io_error("cannot write manifest", &path))?;
        self.staged
            .commit()
            .map_err(io_error("cannot move dataset into place", &self.dest))?;
        Ok(self.manifest)
    }
}

/// Writes one episode under `root` and returns its manifest entry.
pub fn write_episode(
    root: &Path,
    demo: &Demonstration,
    view_name: &str,
    instructions: &[String],
) -> Result<EpisodeMeta, DatasetError> {
    let rel = format!("episodes/{}/{}/{:06}", demo.task, view_name, demo.seed);
    let dir = root.join(&rel);
    for sub in ["rgb", "seg"] {
        let p = dir.join(sub);
        fs::create_dir_all(&p).map_err(io_error("cannot create episode folder", &p))?;
    }
    for (i, (frame, seg)) in demo.frames.iter().zip(&demo.segmentations).enumerate() {
        let p = dir.join(format!("rgb/{i:05}.png"));
        frame.to_image().save(&p).map_err(|source| match source {
            image::ImageError::IoError(e) => io_error("cannot write frame", &p)(e).into(),
            other => DatasetError::Image {
                path: p.clone(),
                source: other,
            },
        })?;
        let p = dir.join(format!("seg/{i:05}.png"));
        let gray = image::GrayImage::from_raw(frame.width, frame.height, seg.clone()).ok_or_else(
            || DatasetError::Invalid {
                problem: "segmentation size differs from the frame".to_owned(),
                path: p.clone(),
            },
        )?;
        gray.save(&p).map_err(|source| DatasetError::Image {
            path: p.clone(),
            source,
        })?;
    }
    let meta = EpisodeMeta {
        dir: rel,
        task: demo.task.clone(),
        view: demo.view,
        view_name: view_name.to_owned(),
        seed: demo.seed,
        instruction: instructions.first().cloned().unwrap_or_default(),
        instructions: instructions.to_vec(),
        success: demo.success,
        frames: demo.frames.len(),
        labels: demo.labels.clone(),
    };
    let write = |name: &str, json: Result<Vec<u8>, serde_json::Error>| {
        let p = dir.join(name);
        let bytes = json.map_err(|e| DatasetError::Invalid {
            problem: e.to_string(),
            path: p.clone(),
        })?;
        fs::write(&p, bytes).map_err(io_error("cannot write episode file", &p))?;
        Ok::<(), DatasetError>(())
    };
    write("meta.json", serde_json::to_vec_pretty(&meta))?;
    write("actions.json", serde_json::to_vec(&demo.actions))?;
    write("states.json", serde_json::to_vec(&demo.states))?;
    Ok(meta)
}

/// A dataset opened for reading.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub root: PathBuf,
    pub manifest: Manifest,
}

impl Dataset {
    /// Opens and validates the dataset at `root`.
    pub fn open(root: &Path) -> Result<Self, DatasetError> {
        let path = root.join("manifest.json");
        if !root.is_dir() {
            return Err(DatasetError::Invalid {
                problem: "folder does not exist".to_owned(),
                path: root.to_owned(),
            });
        }
        let bytes = fs::read(&path).map_err(io_error("cannot read manifest", &path))?;
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| DatasetError::Invalid {
                problem: format!("malformed manifest: {e}"),
                path: path.clone(),
            })?;
        let invalid = |problem: String| DatasetError::Invalid {
            problem,
            path: path.clone(),
        };
        if manifest.format != FORMAT || manifest.version != VERSION {
            return Err(invalid(format!(
                "format '{}' v{} (expected '{FORMAT}' v{VERSION})",
                manifest.format, manifest.version
            )));
        }
        if manifest.episodes.is_empty() {
            return Err(invalid("it lists no episodes".to_owned()));
        }
        if !(MIN_FRAME_SIZE..=MAX_FRAME_SIZE).contains(&manifest.frame_size) {
            return Err(invalid(format!(
                "frame size {} is not {MIN_FRAME_SIZE} to {MAX_FRAME_SIZE}",
                manifest.frame_size
            )));
        }
        if let Some(bad) = manifest.episodes.iter().find(|e| {
            !(1..=MAX_EPISODE_FRAMES).contains(&e.frames) || !super::relative::is_inside(&e.dir)
        }) {
            return Err(invalid(format!(
                "episode '{}' ({} frames) is malformed",
                bad.dir, bad.frames
            )));
        }
        Ok(Self {
            root: root.to_owned(),
            manifest,
        })
    }

    pub fn episodes(&self) -> &[EpisodeMeta] {
        &self.manifest.episodes
    }

    fn frame_path(&self, episode: usize, kind: &str, frame: usize) -> PathBuf {
        self.root
            .join(&self.manifest.episodes[episode].dir)
            .join(format!("{kind}/{frame:05}.png"))
    }

    /// Loads RGB frame `frame` of episode `episode`.
    pub fn frame(&self, episode: usize, frame: usize) -> Result<Rgb8Image, DatasetError> {
        let path = self.frame_path(episode, "rgb", frame);
        let img = image::open(&path)
            .map_err(|source| DatasetError::Image {
                path: path.clone(),
                source,
            })?
            .to_rgb8();
        let size = self.manifest.frame_size;
        if img.width() != size || img.height() != size {
            return Err(DatasetError::Invalid {
                problem: format!(
                    "frame is {}x{}, manifest says {size}x{size}",
                    img.width(),
                    img.height()
                ),
                path,
            });
        }
        Ok(Rgb8Image {
            width: img.width(),
            height: img.height(),
            pixels: img.into_raw(),
        })
    }

    /// Loads the segmentation of frame `frame` of episode `episode`.
    pub fn segmentation(&self, episode: usize, frame: usize) -> Result<Vec<u8>, DatasetError> {
        let path = self.frame_path(episode, "seg", frame);
        let img = image::open(&path).map_err(|source| DatasetError::Image {
            path: path.clone(),
            source,
        })?;
        Ok(img.to_luma8().into_raw())
    }

    /// The actions and states recorded for an episode.
    pub fn trajectory(
        &self,
        episode: usize,
    ) -> Result<(Vec<Action>, Vec<StateRecord>), DatasetError> {
        let dir = self.root.join(&self.manifest.episodes[episode].dir);
        let read = |name: &str| {
            let p = dir.join(name);
            fs::read(&p)
                .map_err(io_error("cannot read episode file", &p))
                .map(|b| (b, p))
        };
        let (a, ap) = read("actions.json")?;
        let (s, sp) = read("states.json")?;
        let bad = |p: PathBuf| {
            move |e: serde_json::Error| DatasetError::Invalid {
                problem: e.to_string(),
                path: p,
            }
        };
        Ok((
            serde_json::from_slice(&a).map_err(bad(ap))?,
            serde_json::from_slice(&s).map_err(bad(sp))?,
        ))
    }

    /// The clip of `episode` starting at frame `start` (see [`clip_indices`]).
    pub fn clip(&self, episode: usize, start: usize) -> Result<Clip, DatasetError> {
        let n = self.manifest.episodes[episode].frames;
        let frames = clip_indices(n, start)
            .into_iter()
            .map(|i| self.frame(episode, i))
            .collect::<Result<_, _>>()?;
        Ok(Clip { frames, episode })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_indices_span_to_the_last_frame() {
        assert_eq!(clip_indices(43, 0), vec![0, 6, 12, 18, 24, 30, 36, 42]);
        assert_eq!(clip_indices(43, 35), vec![35, 36, 37, 38, 39, 40, 41, 42]);
        assert_eq!(clip_indices(5, 0), vec![0, 0, 1, 1, 2, 2, 3, 4]);
        // A damaged frame count must not overflow (the fuzzer's first dataset finding).
        assert_eq!(clip_indices(usize::MAX, 0)[7], usize::MAX - 1);
    }

    #[test]
    fn open_rejects_missing_and_malformed_manifests() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = Dataset::open(dir.path()).expect_err("no manifest");
        assert!(err.to_string().contains("manifest"), "{err}");
        fs::write(dir.path().join("manifest.json"), b"{not json").expect("write");
        let err = Dataset::open(dir.path()).expect_err("bad json");
        assert!(err.to_string().contains("malformed"), "{err}");
        let other = serde_json::json!({"format": "x", "version": 1, "world": "w", "frame_size": 8, "episodes": []});
        fs::write(dir.path().join("manifest.json"), other.to_string()).expect("write");
        let err = Dataset::open(dir.path()).expect_err("foreign format");
        assert!(err.to_string().contains("expected"), "{err}");
    }
}
