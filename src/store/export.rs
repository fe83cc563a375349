//! Plans out of the store in formats other tools read: an animated GIF, a PNG strip (one row
//! per refinement iteration), an MP4 (through a system `ffmpeg`), and the curated set in the
//! folder layout of the reference PyTorch trainer. LeRobot datasets are in
//! [`crate::store::lerobot`]. The JSON export/import that round-trips a
//! store lives in [`crate::store::db`]. Every file is written atomically; folders are staged.
//!
//! Reference layout (what `SequentialDatasetv2` in the reference `flowdiffusion/datasets.py`
//! globs: `{root}/*/*/*/trajectory_*`, the task is the trajectory's parent folder with `-` read
//! as a space, frames are the numbered PNGs in numeric order, the video is `NN_output.gif`, the
//! feedback is the last line of `feedback_long.txt`):
//! ```text
//! OUT/<world>/view<V>/<task>/trajectory_<N>/00.png .. 07.png   start frame + the kept plan
//!                                           00_output.gif      the generation it refines
//!                                           feedback_long.txt  the critique of that generation
//! OUT/videoagent_manifest.json            trajectory -> plan uid, instruction, iterations
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use crate::env::Rgb8Image;
use crate::store::atomic::{IoError, StagedDir, io_error, temp_sibling, write_file, write_json};
use crate::store::db::{PlanId, Store, StoreError};

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(
        "MP4 export needs ffmpeg on PATH (or VIDEOAGENT_FFMPEG), and none was found: install it \
         (e.g. `apt-get install ffmpeg`, `brew install ffmpeg`) or export --format gif"
    )]
    FfmpegMissing,
    #[error("ffmpeg failed ({status}): {stderr}")]
    Ffmpeg { status: String, stderr: String },
    #[error("cannot write Parquet: {0}")]
    Parquet(String),
    #[error("plan {0} has no generated frames yet")]
    NoFrames(PlanId),
    #[error("nothing to export to {0}: no frames")]
    Empty(PathBuf),
}

/// Milliseconds each frame is shown in GIF and MP4 exports.
pub const FRAME_MS: u32 = 250;
/// Nearest-neighbour upscaling of GIF, strip and MP4 exports (plans are small).
pub const SCALE: u32 = 4;

/// The start frame (resized to the plan's size) and the frames of `iteration` (None = last).
fn plan_frames(
    store: &Store,
    plan: PlanId,
    iteration: Option<usize>,
) -> Result<Vec<Rgb8Image>, ExportError> {
    let mut frames = store.load_frames(plan, iteration)?;
    if frames.len() < 2 {
        return Err(ExportError::NoFrames(plan));
    }
    let size = frames[1].width;
    frames[0] = crate::model::pipeline::resize(&frames[0], size);
    Ok(frames)
}

/// The formats a plan (or a grid of its iterations) can be exported in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoFormat {
    /// A looping animated GIF.
    Gif,
    /// An H.264 MP4 through a system ffmpeg.
    Mp4,
    /// One PNG: a row per iteration, a column per frame.
    PngStrip,
}

impl VideoFormat {
    pub const ALL: [VideoFormat; 3] = [VideoFormat::Gif, VideoFormat::Mp4, VideoFormat::PngStrip];

    pub fn extension(self) -> &'static str {
        match self {
            VideoFormat::Gif => "gif",
            VideoFormat::Mp4 => "mp4",
            VideoFormat::PngStrip => "png",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            VideoFormat::Gif => "GIF",
            VideoFormat::Mp4 => "MP4",
            VideoFormat::PngStrip => "PNG strip",
        }
    }
}

/// Writes `rows` (one frame sequence per iteration, start frame first) in `format`: a PNG strip
/// lays them out as a grid; a GIF or MP4 plays them stacked, all rows advancing together (one
/// row plays as it is). Rows of different lengths hold their last frame.
pub fn write_video(
    format: VideoFormat,
    rows: &[Vec<Rgb8Image>],
    path: &Path,
) -> Result<(), ExportError> {
    let len = rows.iter().map(Vec::len).max().unwrap_or(0);
    if len == 0 {
        return Err(ExportError::Empty(path.to_owned()));
    }
    if format == VideoFormat::PngStrip {
        let img = crate::viz::upscale(&crate::viz::grid(rows, 1, [255, 255, 255]), SCALE);
        return Ok(crate::viz::write_png(path, &img).map_err(io_error("cannot write", path))?);
    }
    let frames: Vec<Rgb8Image> = if let [row] = rows {
        row.clone()
    } else {
        (0..len)
            .map(|t| {
                let column: Vec<Vec<Rgb8Image>> = rows
                    .iter()
                    .filter_map(|r| r.get(t.min(r.len().saturating_sub(1))).cloned())
                    .map(|f| vec![f])
                    .collect();
                let img = crate::viz::grid(&column, 1, [255, 255, 255]);
                Rgb8Image {
                    width: img.width(),
                    height: img.height(),
                    pixels: img.into_raw(),
                }
            })
            .collect()
    };
    match format {
        VideoFormat::Gif => crate::viz::write_gif(path, &frames, FRAME_MS, SCALE)
            .map_err(io_error("cannot write", path))?,
        _ => write_mp4(&frames, path)?,
    }
    Ok(())
}

/// Writes the plan's last iteration (after its start frame) as a looping GIF.
pub fn export_gif(store: &Store, plan: PlanId, path: &Path) -> Result<(), ExportError> {
    write_video(VideoFormat::Gif, &[plan_frames(store, plan, None)?], path)
}

/// Writes every iteration of the plan as one row of a PNG grid (start frame first).
pub fn export_strip(store: &Store, plan: PlanId, path: &Path) -> Result<(), ExportError> {
    let n = store.plan(plan)?.iterations.len();
    if n == 0 {
        return Err(ExportError::NoFrames(plan));
    }
    let rows = (0..n)
        .map(|i| plan_frames(store, plan, Some(i)))
        .collect::<Result<Vec<_>, _>>()?;
    write_video(VideoFormat::PngStrip, &rows, path)
}

/// Writes the plan's last iteration as an MP4 through ffmpeg.
pub fn export_mp4(store: &Store, plan: PlanId, path: &Path) -> Result<(), ExportError> {
    write_video(VideoFormat::Mp4, &[plan_frames(store, plan, None)?], path)
}

/// The ffmpeg to use: `$VIDEOAGENT_FFMPEG`, else `ffmpeg` on PATH if it runs.
pub fn find_ffmpeg() -> Option<PathBuf> {
    let candidate = std::env::var_os("VIDEOAGENT_FFMPEG")
        .map_or_else(|| PathBuf::from("ffmpeg"), PathBuf::from);
    let ok = Command::new(&candidate)
        .arg("-version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(candidate)
}

/// Encodes `frames` as an H.264 (or ffmpeg's default) MP4, atomically.
fn write_mp4(frames: &[Rgb8Image], path: &Path) -> Result<(), ExportError> {
    let ffmpeg = find_ffmpeg().ok_or(ExportError::FfmpegMissing)?;
    // A scratch folder beside the output, removed when dropped (never committed).
    let scratch = temp_sibling(path);
    let work = StagedDir::new(&scratch).map_err(io_error("cannot create", &scratch))?;
    for (i, f) in frames.iter().enumerate() {
        let p = work.path().join(format!("{i:02}.png"));
        crate::viz::write_png(&p, &f.to_image()).map_err(io_error("cannot write", &p))?;
    }
    let tmp = temp_sibling(path).with_extension("mp4");
    let fps = 1000.0 / f64::from(FRAME_MS);
    let out = Command::new(&ffmpeg)
        .args(["-hide_banner", "-loglevel", "error", "-y", "-framerate"])
        .arg(format!("{fps}"))
        .arg("-i")
        .arg(work.path().join("%02d.png"))
        .args([
            "-vf",
            &format!("scale=iw*{SCALE}:ih*{SCALE}:flags=neighbor,format=yuv420p"),
            "-movflags",
            "+faststart",
        ])
        .arg(&tmp)
        .output()
        .map_err(io_error("cannot run ffmpeg", &ffmpeg))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&tmp);
        return Err(ExportError::Ffmpeg {
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(io_error("cannot move into place", path))?;
    Ok(())
}

/// One trajectory of a reference export.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReferenceTrajectory {
    /// Relative to the export root.
    pub dir: String,
    pub plan_uid: String,
    pub instruction: String,
    pub frames: usize,
    /// The iteration whose frames are the PNGs, and the one in `00_output.gif`.
    pub target_iteration: usize,
    pub conditioning_iteration: usize,
    pub feedback: String,
}

/// `videoagent_manifest.json` of a reference export.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReferenceManifest {
    pub format: String,
    pub trajectories: Vec<ReferenceTrajectory>,
}

/// Folder-safe form of a name (letters, digits, `-`, `_`).
fn safe(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if s.is_empty() { "unnamed".into() } else { s }
}

/// Writes `plans` (the curated set when empty) in the reference trainer's layout into the
/// new folder `out` (see the module docs). For each plan the PNGs are its last iteration and
/// the GIF is the iteration before it, with that iteration's critique as feedback: the
/// (refined video, previous generation, feedback) triple the refinement is trained on. A plan
/// with a single iteration uses it for both, and its own critique.
pub fn export_reference(
    store: &Store,
    plans: &[PlanId],
    out: &Path,
) -> Result<ReferenceManifest, ExportError> {
    let ids: Vec<PlanId> = if plans.is_empty() {
        store.curated()?.into_iter().map(|p| p.id).collect()
    } else {
        plans.to_vec()
    };
    let staged = StagedDir::new(out).map_err(io_error("cannot create export folder", out))?;
    let mut trajectories = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        let d = store.plan(*id)?;
        let iters = d.iterations.len();
        if iters == 0 {
            return Err(ExportError::NoFrames(*id));
        }
        let target = iters - 1;
        let cond = iters.saturating_sub(2);
        let rel = format!(
            "{}/view{}/{}/trajectory_{n}",
            safe(&d.summary.world),
            d.summary.view,
            safe(&d.summary.task)
        );
        let dir = staged.path().join(&rel);
        std::fs::create_dir_all(&dir).map_err(io_error("cannot create", &dir))?;
        let frames = plan_frames(store, *id, Some(target))?;
        for (i, f) in frames.iter().enumerate() {
            let p = dir.join(format!("{i:02}.png"));
            crate::viz::write_png(&p, &f.to_image()).map_err(io_error("cannot write", &p))?;
        }
        let video = plan_frames(store, *id, Some(cond))?;
        let gif = dir.join("00_output.gif");
        crate::viz::write_gif(&gif, &video, FRAME_MS, 1).map_err(io_error("cannot write", &gif))?;
        let critique = d.iterations[cond]
            .critique
            .split_whitespace()
            .collect::<Vec<_>>();
        let feedback = if critique.is_empty() {
            "No feedback".to_owned()
        } else {
            critique.join(" ")
        };
        let fb = dir.join("feedback_long.txt");
        write_file(&fb, format!("{feedback}\n").as_bytes())
            .map_err(io_error("cannot write", &fb))?;
        trajectories.push(ReferenceTrajectory {
            dir: rel,
            plan_uid: d.summary.uid,
            instruction: d.summary.instruction,
            frames: frames.len(),
            target_iteration: target,
            conditioning_iteration: cond,
            feedback,
        });
    }
    let manifest = ReferenceManifest {
        format: "videoagent-reference-v1".into(),
        trajectories,
    };
    let m = staged.path().join("videoagent_manifest.json");
    write_json(&m, &manifest).map_err(io_error("cannot write", &m))?;
    staged
        .commit()
        .map_err(io_error("cannot move export into place", out))?;
    Ok(manifest)
}
