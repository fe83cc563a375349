//! The curated set as a LeRobot-style dataset (codebase version v2.1 layout), so Hugging Face
//! tooling can open it: one episode per plan (its start frame and the frames of its last
//! iteration, at [`FPS`] frames per second), the instruction as the episode's task.
//!
//! ```text
//! OUT/meta/info.json                               features, paths, counts, fps
//! OUT/meta/episodes.jsonl                          {episode_index, tasks, length}
//! OUT/meta/tasks.jsonl                             {task_index, task}
//! OUT/meta/episodes_stats.jsonl                    per-episode min/max/mean/std of each feature
//! OUT/data/chunk-000/episode_000000.parquet        one row per frame
//! OUT/videos/chunk-000/observation.video/episode_000000.mp4   when ffmpeg is available
//! ```
//! Parquet columns: `observation.image` (struct `{bytes: binary (PNG), path: string}`, the
//! Hugging Face `Image` feature, declared in the file's `huggingface` metadata), `timestamp`
//! (float), `frame_index`, `episode_index`, `index`, `task_index` (int64). Frames are embedded
//! as images (`dtype: "image"`), so the dataset is complete without a video encoder; with a
//! system ffmpeg each episode is also an H.264 MP4, the `observation.video` feature (`dtype:
//! "video"`, frames upscaled [`crate::store::export::SCALE`] times). Plans carry no robot
//! actions or states, so the dataset has none.
//! Written with the `parquet` crate's low-level writer (no Arrow), uncompressed.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use parquet::basic::{ConvertedType, Repetition, Type as PhysicalType};
use parquet::data_type::{ByteArray, ByteArrayType, FloatType, Int64Type};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;
use serde_json::json;

use crate::env::Rgb8Image;
use crate::store::atomic::{StagedDir, io_error, write_file, write_json};
use crate::store::db::{PlanId, Store};
use crate::store::export::{ExportError, SCALE, VideoFormat, write_video};

/// Frames per second of the exported episodes.
pub const FPS: u32 = 4;
/// The image feature's key.
pub const IMAGE_KEY: &str = "observation.image";
/// The video feature's key (written when ffmpeg is available).
pub const VIDEO_KEY: &str = "observation.video";

fn parquet_err(e: parquet::errors::ParquetError) -> ExportError {
    ExportError::Parquet(e.to_string())
}

fn schema() -> Result<Arc<Type>, ExportError> {
    let leaf = |name: &str, t: PhysicalType, conv: Option<ConvertedType>| {
        let mut b = Type::primitive_type_builder(name, t).with_repetition(Repetition::REQUIRED);
        if let Some(c) = conv {
            b = b.with_converted_type(c);
        }
        b.build().map(Arc::new)
    };
    let image = Type::group_type_builder(IMAGE_KEY)
        .with_repetition(Repetition::REQUIRED)
        .with_fields(vec![
            leaf("bytes", PhysicalType::BYTE_ARRAY, None).map_err(parquet_err)?,
            leaf("path", PhysicalType::BYTE_ARRAY, Some(ConvertedType::UTF8))
                .map_err(parquet_err)?,
        ])
        .build()
        .map_err(parquet_err)?;
    let mut fields = vec![Arc::new(image)];
    fields.push(leaf("timestamp", PhysicalType::FLOAT, None).map_err(parquet_err)?);
    for name in ["frame_index", "episode_index", "index", "task_index"] {
        fields.push(leaf(name, PhysicalType::INT64, None).map_err(parquet_err)?);
    }
    Ok(Arc::new(
        Type::group_type_builder("schema")
            .with_fields(fields)
            .build()
            .map_err(parquet_err)?,
    ))
}

/// The `huggingface` key-value metadata: how `datasets` should read the columns.
fn hf_metadata() -> String {
    let v = |dtype: &str| json!({ "dtype": dtype, "_type": "Value" });
    json!({ "info": { "features": {
        IMAGE_KEY: { "_type": "Image" },
        "timestamp": v("float32"),
        "frame_index": v("int64"),
        "episode_index": v("int64"),
        "index": v("int64"),
        "task_index": v("int64"),
    }}})
    .to_string()
}

struct Episode {
    frames: Vec<Rgb8Image>,
    pngs: Vec<Vec<u8>>,
    task_index: i64,
    first_index: i64,
}

fn encode_png(img: &Rgb8Image) -> Result<Vec<u8>, ExportError> {
    let mut png = Vec::new();
    img.to_image()
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| ExportError::Parquet(format!("cannot encode PNG: {e}")))?;
    Ok(png)
}

fn write_episode(ep_index: i64, ep: &Episode) -> Result<Vec<u8>, ExportError> {
    let props = WriterProperties::builder()
        .set_key_value_metadata(Some(vec![KeyValue::new(
            "huggingface".to_owned(),
            hf_metadata(),
        )]))
        .build();
    let mut out = Vec::new();
    let mut writer =
        SerializedFileWriter::new(&mut out, schema()?, Arc::new(props)).map_err(parquet_err)?;
    let n = ep.frames.len();
    let mut rg = writer.next_row_group().map_err(parquet_err)?;
    let mut col = 0usize;
    while let Some(mut c) = rg.next_column().map_err(parquet_err)? {
        match col {
            0 => {
                let v: Vec<ByteArray> =
                    ep.pngs.iter().map(|b| ByteArray::from(b.clone())).collect();
                c.typed::<ByteArrayType>()
                    .write_batch(&v, None, None)
                    .map_err(parquet_err)?;
            }
            1 => {
                let v: Vec<ByteArray> = (0..n)
                    .map(|i| {
                        ByteArray::from(
                            format!("episode_{ep_index:06}/frame_{i:06}.png").into_bytes(),
                        )
                    })
                    .collect();
                c.typed::<ByteArrayType>()
                    .write_batch(&v, None, None)
                    .map_err(parquet_err)?;
            }
            2 => {
                let v: Vec<f32> = (0..n).map(|i| i as f32 / FPS as f32).collect();
                c.typed::<FloatType>()
                    .write_batch(&v, None, None)
                    .map_err(parquet_err)?;
            }
            k => {
                let v: Vec<i64> = (0..n as i64)
                    .map(|i| match k {
                        3 => i,
                        4 => ep_index,
                        5 => ep.first_index + i,
                        _ => ep.task_index,
                    })
                    .collect();
                c.typed::<Int64Type>()
                    .write_batch(&v, None, None)
                    .map_err(parquet_err)?;
            }
        }
        c.close().map_err(parquet_err)?;
        col += 1;
    }
    rg.close().map_err(parquet_err)?;
    writer.close().map_err(parquet_err)?;
    Ok(out)
}

/// min, max, mean, std of a list of values.
fn stats(values: impl Iterator<Item = f64> + Clone) -> (f64, f64, f64, f64, usize) {
    let n = values.clone().count().max(1);
    let (mut lo, mut hi, mut sum) = (f64::MAX, f64::MIN, 0.0);
    for v in values.clone() {
        lo = lo.min(v);
        hi = hi.max(v);
        sum += v;
    }
    let mean = sum / n as f64;
    let var = values.map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
    (lo, hi, mean, var.sqrt(), n)
}

fn episode_stats(ep_index: i64, ep: &Episode) -> serde_json::Value {
    let mut image = BTreeMap::new();
    let mut per_channel: [Vec<f64>; 4] = Default::default();
    for c in 0..3 {
        let it = ep
            .frames
            .iter()
            .flat_map(|f| f.pixels.iter().skip(c).step_by(3))
            .map(|p| f64::from(*p) / 255.0);
        let (lo, hi, mean, std, _) = stats(it);
        per_channel[0].push(lo);
        per_channel[1].push(hi);
        per_channel[2].push(mean);
        per_channel[3].push(std);
    }
    for (k, name) in ["min", "max", "mean", "std"].iter().enumerate() {
        let nested: Vec<Vec<Vec<f64>>> = per_channel[k].iter().map(|v| vec![vec![*v]]).collect();
        image.insert(name.to_string(), json!(nested));
    }
    image.insert("count".into(), json!([ep.frames.len()]));
    let n = ep.frames.len() as i64;
    let scalar = |vals: Vec<f64>| {
        let (lo, hi, mean, std, count) = stats(vals.into_iter());
        json!({ "min": [lo], "max": [hi], "mean": [mean], "std": [std], "count": [count] })
    };
    json!({
        "episode_index": ep_index,
        "stats": {
            IMAGE_KEY: image,
            "timestamp": scalar((0..n).map(|i| i as f64 / f64::from(FPS)).collect()),
            "frame_index": scalar((0..n).map(|i| i as f64).collect()),
            "episode_index": scalar(vec![ep_index as f64; n as usize]),
            "index": scalar((0..n).map(|i| (ep.first_index + i) as f64).collect()),
            "task_index": scalar(vec![ep.task_index as f64; n as usize]),
        }
    })
}

fn jsonl(values: &[serde_json::Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        out.extend_from_slice(v.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

/// Writes `plans` (the curated set when empty) as a LeRobot-style dataset into the new folder
/// `out`. Returns the number of episodes.
pub fn export_lerobot(store: &Store, plans: &[PlanId], out: &Path) -> Result<usize, ExportError> {
    let ids: Vec<PlanId> = if plans.is_empty() {
        store.curated()?.into_iter().map(|p| p.id).collect()
    } else {
        plans.to_vec()
    };
    let staged = StagedDir::new(out).map_err(io_error("cannot create export folder", out))?;
    let data = staged.path().join("data").join("chunk-000");
    let meta = staged.path().join("meta");
    for d in [&data, &meta] {
        std::fs::create_dir_all(d).map_err(io_error("cannot create", d))?;
    }
    let mut tasks: Vec<String> = Vec::new();
    let mut episodes_meta = Vec::new();
    let mut stats_lines = Vec::new();
    let mut total_frames = 0i64;
    let mut shape = [0u32; 2];
    let with_videos = crate::store::export::find_ffmpeg().is_some();
    let videos = staged
        .path()
        .join("videos")
        .join("chunk-000")
        .join(VIDEO_KEY);
    for (e, id) in ids.iter().enumerate() {
        let d = store.plan(*id)?;
        if d.iterations.is_empty() {
            return Err(ExportError::NoFrames(*id));
        }
        let mut frames = store.load_frames(*id, None)?;
        let size = frames[1].width;
        frames[0] = crate::model::pipeline::resize(&frames[0], size);
        shape = [frames[1].height, frames[1].width];
        let task = d.summary.instruction.clone();
        let task_index = match tasks.iter().position(|t| *t == task) {
            Some(i) => i,
            None => {
                tasks.push(task.clone());
                tasks.len() - 1
            }
        } as i64;
        let ep = Episode {
            pngs: frames.iter().map(encode_png).collect::<Result<_, _>>()?,
            frames,
            task_index,
            first_index: total_frames,
        };
        let e = e as i64;
        if with_videos {
            std::fs::create_dir_all(&videos).map_err(io_error("cannot create", &videos))?;
            let path = videos.join(format!("episode_{e:06}.mp4"));
            write_video(VideoFormat::Mp4, std::slice::from_ref(&ep.frames), &path)?;
        }
        let bytes = write_episode(e, &ep)?;
        let path = data.join(format!("episode_{e:06}.parquet"));
        write_file(&path, &bytes).map_err(io_error("cannot write", &path))?;
        episodes_meta.push(json!({
            "episode_index": e,
            "tasks": [task],
            "length": ep.frames.len(),
            "videoagent_plan_uid": d.summary.uid,
        }));
        stats_lines.push(episode_stats(e, &ep));
        total_frames += ep.frames.len() as i64;
    }
    let n = ids.len();
    let scalar = |dtype: &str| json!({ "dtype": dtype, "shape": [1], "names": null });
    let mut info = json!({
        "codebase_version": "v2.1",
        "robot_type": "videoagent-tabletop",
        "total_episodes": n,
        "total_frames": total_frames,
        "total_tasks": tasks.len(),
        "total_videos": 0,
        "total_chunks": 1,
        "chunks_size": 1000,
        "fps": FPS,
        "splits": { "train": format!("0:{n}") },
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": null,
        "features": {
            IMAGE_KEY: {
                "dtype": "image",
                "shape": [shape[0], shape[1], 3],
                "names": ["height", "width", "channel"],
            },
            "timestamp": scalar("float32"),
            "frame_index": scalar("int64"),
            "episode_index": scalar("int64"),
            "index": scalar("int64"),
            "task_index": scalar("int64"),
        },
    });
    if with_videos {
        let [h, w] = shape.map(|s| s * SCALE);
        info["total_videos"] = json!(n);
        info["video_path"] =
            json!("videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4");
        info["features"][VIDEO_KEY] = json!({
            "dtype": "video",
            "shape": [h, w, 3],
            "names": ["height", "width", "channel"],
            "info": {
                "video.fps": FPS,
                "video.height": h,
                "video.width": w,
                "video.channels": 3,
                "video.codec": "h264",
                "video.pix_fmt": "yuv420p",
                "video.is_depth_map": false,
                "has_audio": false,
            },
        });
    }
    let tasks_json: Vec<serde_json::Value> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| json!({ "task_index": i, "task": t }))
        .collect();
    for (name, bytes) in [
        ("episodes.jsonl", jsonl(&episodes_meta)),
        ("tasks.jsonl", jsonl(&tasks_json)),
        ("episodes_stats.jsonl", jsonl(&stats_lines)),
    ] {
        let p = meta.join(name);
        write_file(&p, &bytes).map_err(io_error("cannot write", &p))?;
    }
    let p = meta.join("info.json");
    write_json(&p, &info).map_err(io_error("cannot write", &p))?;
    staged
        .commit()
        .map_err(io_error("cannot move export into place", out))?;
    Ok(n)
}
