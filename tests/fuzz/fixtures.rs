//! Valid inputs for every loader, made once per test process in a temporary folder: a tiny
//! model folder (config + safetensors), the same U-Net as a PyTorch zip pickle, a dataset of
//! two short episodes, a plan folder with one refinement, a store export and a chat reply.

use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use videoagent::critic::{Finding, FindingKind, PixelRect, Review, Verdict};
use videoagent::env::Rgb8Image;
use videoagent::model::train::{TrainConfig, Trainer};
use videoagent::model::{ModelConfig, UNetConfig};
use videoagent::store::dataset::{EpisodeMeta, FORMAT, Manifest, VERSION};
use videoagent::store::db::{
    Annotation, NewIteration, NewPlan, Store, Verdict as LabelVerdict, export_json,
};
use videoagent::store::plan_record::{
    IterationRecord, PlanRecord, RefinementRecord, SamplerRecord, write_iteration, write_plan,
};

pub struct Fixtures {
    pub root: tempfile::TempDir,
    pub model: PathBuf,
    /// The tiny U-Net's tensors (`unet.` names), for PyTorch zips made per case.
    pub tensors: std::collections::HashMap<String, Tensor>,
    pub dataset: PathBuf,
    pub plan: PathBuf,
    pub export: PathBuf,
    pub reply: Vec<u8>,
}

pub fn tiny_model() -> ModelConfig {
    ModelConfig::new(UNetConfig::tiny(), "tabletop")
}

pub fn frame(seed: u8, side: u32) -> Rgb8Image {
    Rgb8Image {
        width: side,
        height: side,
        pixels: (0..side * side * 3)
            .map(|i| (i as u8).wrapping_mul(seed | 1).wrapping_add(seed))
            .collect(),
    }
}

impl Fixtures {
    pub fn new() -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        let model = root.path().join("model");
        let trainer = Trainer::new(
            tiny_model(),
            TrainConfig {
                steps: 0,
                ..TrainConfig::default()
            },
            &model,
            None,
            &Device::Cpu,
        )
        .expect("tiny trainer");
        trainer.save().expect("model folder");
        let tensors = candle_core::safetensors::load(model.join("model.safetensors"), &Device::Cpu)
            .expect("weights");
        Self {
            model,
            tensors,
            dataset: dataset(root.path()),
            plan: plan_folder(root.path()),
            export: store_export(root.path()),
            reply: br#"{"id":"c1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Reject. The block vanishes in frame 3; move the gripper to it first."},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":12}}"#.to_vec(),
            root,
        }
    }

    /// A fresh scratch folder for one case.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let dir = self.root.path().join("scratch").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch");
        dir
    }
}

/// Copies the files of `from` (one level deep) into `to`.
pub fn copy_folder(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("ls").flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_folder(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).expect("copy");
        }
    }
}

fn dataset(root: &Path) -> PathBuf {
    let dir = root.join("dataset");
    let mut episodes = Vec::new();
    for (e, task) in ["push", "door-open"].iter().enumerate() {
        let rel = format!("episodes/{task}/0/{e}");
        let ep = dir.join(&rel);
        for kind in ["rgb", "seg"] {
            std::fs::create_dir_all(ep.join(kind)).expect("mkdir");
        }
        for f in 0..3u8 {
            frame(f, 8)
                .to_image()
                .save(ep.join(format!("rgb/{f:05}.png")))
                .expect("png");
            image::GrayImage::from_pixel(8, 8, image::Luma([f]))
                .save(ep.join(format!("seg/{f:05}.png")))
                .expect("png");
        }
        std::fs::write(ep.join("actions.json"), b"[]").expect("actions");
        std::fs::write(ep.join("states.json"), b"[]").expect("states");
        episodes.push(EpisodeMeta {
            dir: rel,
            task: (*task).to_owned(),
            view: 0,
            view_name: "front".into(),
            seed: e as u64,
            instruction: format!("{task} it"),
            instructions: vec![format!("{task} it")],
            success: true,
            frames: 3,
            labels: vec!["table".into(), "block".into()],
        });
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        version: VERSION,
        world: "tabletop".into(),
        frame_size: 8,
        episodes,
    };
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec_pretty(&manifest).expect("json"),
    )
    .expect("manifest");
    dir
}

fn plan_folder(root: &Path) -> PathBuf {
    let dir = root.join("plan");
    let start = frame(1, 8);
    let first: Vec<Rgb8Image> = (2..5).map(|s| frame(s, 8)).collect();
    let second: Vec<Rgb8Image> = (5..8).map(|s| frame(s, 8)).collect();
    let review = |verdict, feedback: &str| Review {
        verdict,
        feedback: feedback.into(),
        findings: vec![Finding {
            frame_idx: 1,
            object: "block".into(),
            kind: FindingKind::Vanished,
            region: PixelRect {
                x: 1,
                y: 2,
                width: 3,
                height: 4,
            },
        }],
        latency: std::time::Duration::from_millis(12),
    };
    let iterations = [
        (&first, review(Verdict::Reject, "The block vanishes.")),
        (&second, review(Verdict::Accept, "Done.")),
    ]
    .into_iter()
    .enumerate()
    .map(|(index, (frames, review))| IterationRecord {
        index,
        dir: write_iteration(&dir, index, &start, frames, &review.feedback).expect("iteration"),
        prompt: "push it".into(),
        sample_seed: index as u64,
        sample_ms: 3.0,
        review,
    })
    .collect();
    let record = PlanRecord {
        world: "tabletop".into(),
        task: "push".into(),
        view: 1,
        instruction: "push it".into(),
        env_seed: 3,
        sample_seed: 3,
        model: "tiny".into(),
        device: "CPU".into(),
        sampler: SamplerRecord {
            kind: "ddim".into(),
            steps: 10,
            guidance: 0.0,
            precision: videoagent::model::precision::Precision::F32,
        },
        load_ms: 1.0,
        sample_ms: 2.0,
        frames: (0..4).map(|i| format!("frames/{i:02}.png")).collect(),
        refinement: Some(RefinementRecord {
            critic: "perception".into(),
            max_refinements: 1,
            chosen: Some(1),
            stop: "accepted".into(),
            iterations,
        }),
    };
    write_plan(&dir, &record, &start, &second).expect("plan");
    dir
}

fn store_export(root: &Path) -> PathBuf {
    let (store, _) = Store::open(&root.join("source-store")).expect("store");
    let plan = store
        .add_plan(&NewPlan {
            world: "tabletop".into(),
            task: "push".into(),
            view: 1,
            env_seed: 4,
            sample_seed: 4,
            instruction: "push it".into(),
            model: "tiny".into(),
            sampler: SamplerRecord {
                kind: "ddim".into(),
                steps: 10,
                guidance: 0.0,
                precision: videoagent::model::precision::Precision::F32,
            },
            start_frame: frame(1, 8),
        })
        .expect("plan");
    store
        .add_iteration(
            plan,
            &NewIteration {
                frames: (2..9).map(|s| frame(s, 8)).collect(),
                critique: "fine".into(),
                verdict: Some(LabelVerdict::Accept),
                findings: Vec::new(),
            },
        )
        .expect("iteration");
    store
        .annotate(
            plan,
            &Annotation {
                verdict: Some(LabelVerdict::Accept),
                rating: Some(5),
                tags: vec!["clean".into()],
                note: "good".into(),
                ..Annotation::default()
            },
            "ann",
        )
        .expect("label");
    store.curate(plan, true, "ann").expect("curate");
    let out = root.join("export");
    export_json(&store, &[], &out).expect("export");
    out
}

/// The files of a PyTorch `torch.save` zip of `tensors`: a protocol 2 pickle of a dict of
/// `_rebuild_tensor_v2` calls and one storage per tensor. `claim` makes the pickle claim other
/// dims for the tensors named (the storage stays the real data), as a damaged header would.
pub fn torch_pickle(
    tensors: &std::collections::HashMap<String, Tensor>,
    claim: &std::collections::HashMap<String, Vec<usize>>,
) -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let mut pkl = vec![0x80, 2, b'}', b'('];
    let mut storages = Vec::new();
    for (key, name) in names.iter().enumerate() {
        let t = &tensors[*name];
        let dims = claim
            .get(*name)
            .cloned()
            .unwrap_or_else(|| t.dims().to_vec());
        let data: Vec<f32> = t
            .to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1())
            .expect("f32 data");
        unicode(&mut pkl, name);
        pkl.extend(b"ctorch._utils\n_rebuild_tensor_v2\n(");
        pkl.push(b'(');
        unicode(&mut pkl, "storage");
        pkl.extend(b"ctorch\nFloatStorage\n");
        unicode(&mut pkl, &key.to_string());
        unicode(&mut pkl, "cpu");
        int(&mut pkl, data.len());
        pkl.extend(b"tQ");
        int(&mut pkl, 0);
        pkl.push(b'(');
        for &d in &dims {
            int(&mut pkl, d);
        }
        pkl.push(b't');
        pkl.push(b'(');
        let mut stride = 1usize;
        let mut strides = vec![0; dims.len()];
        for (i, &d) in dims.iter().enumerate().rev() {
            strides[i] = stride;
            stride = stride.saturating_mul(d);
        }
        for s in strides {
            int(&mut pkl, s);
        }
        pkl.push(b't');
        pkl.push(0x89);
        pkl.extend(b"ccollections\nOrderedDict\n)R");
        pkl.extend(b"tR");
        storages.push((
            key.to_string(),
            data.iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        ));
    }
    pkl.extend(b"u.");
    (pkl, storages)
}

/// The zip around a pickle and its storages (stored, not compressed, as `torch.save` does).
pub fn zip_entries(pkl: &[u8], storages: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut out);
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", opts).expect("zip");
    zip.write_all(pkl).expect("zip");
    for (key, bytes) in storages {
        zip.start_file(format!("archive/data/{key}"), opts)
            .expect("zip");
        zip.write_all(bytes).expect("zip");
    }
    zip.start_file("archive/version", opts).expect("zip");
    zip.write_all(b"3\n").expect("zip");
    zip.finish().expect("zip");
    out.into_inner()
}

fn unicode(pkl: &mut Vec<u8>, s: &str) {
    pkl.push(b'X');
    pkl.extend((s.len() as u32).to_le_bytes());
    pkl.extend(s.as_bytes());
}

/// BININT (i32) when it fits, else LONG1 (the pickle of a Python int of any size).
fn int(pkl: &mut Vec<u8>, v: usize) {
    match i32::try_from(v) {
        Ok(small) => {
            pkl.push(b'J');
            pkl.extend(small.to_le_bytes());
        }
        Err(_) => {
            pkl.extend([0x8a, 8]);
            pkl.extend((v as u64).to_le_bytes());
        }
    }
}
