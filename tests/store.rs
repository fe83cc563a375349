//! The plan store through the `videoagent` binary: JSON export/import round trip, the
//! reference trainer's layout, GIF/PNG/MP4 exports, importing first frames, the store check,
//! concurrent writer processes, and the kill -9 harness.

use std::path::{Path, PathBuf};
use std::process::Command;

use videoagent::env::Rgb8Image;
use videoagent::store::db::{
    Annotation, Filter, Finding, IterationPreference, NewIteration, NewPlan, PlanId, Preference,
    Store, Verdict, read_export,
};
use videoagent::store::plan_record::SamplerRecord;

fn videoagent(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_videoagent"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the binary runs")
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn frame(seed: u8) -> Rgb8Image {
    Rgb8Image {
        width: 16,
        height: 16,
        pixels: (0..16 * 16 * 3)
            .map(|i: u32| (i as u8).wrapping_mul(seed | 1).wrapping_add(seed))
            .collect(),
    }
}

fn plan(task: &str, seed: u8) -> NewPlan {
    NewPlan {
        world: "tabletop".into(),
        task: task.into(),
        view: 1,
        env_seed: u64::from(seed),
        sample_seed: 7,
        instruction: format!("{task} please"),
        model: "sample_data/models/tabletop-cpu".into(),
        sampler: SamplerRecord {
            kind: "ddim".into(),
            steps: 10,
            guidance: 0.0,
            precision: videoagent::model::precision::Precision::F32,
        },
        start_frame: frame(seed),
    }
}

fn iteration(seed: u8, critique: &str, verdict: Verdict) -> NewIteration {
    NewIteration {
        frames: (1..=7).map(|i| frame(seed.wrapping_add(i))).collect(),
        critique: critique.into(),
        verdict: Some(verdict),
        findings: vec![Finding {
            frame_idx: 2,
            text: "the block jumps".into(),
            region: None,
        }],
    }
}

/// A store with three plans, two iterations on the first, labels, a preference, curation.
fn sample_store(dir: &Path) -> Vec<PlanId> {
    let (store, _) = Store::open(dir).expect("open");
    let a = store.add_plan(&plan("push", 1)).expect("a");
    store
        .add_iteration(
            a,
            &iteration(10, "Inconsistent glitch. The block jumps.", Verdict::Reject),
        )
        .expect("a0");
    store
        .add_iteration(a, &iteration(20, "Looks right.", Verdict::Accept))
        .expect("a1");
    let b = store.add_plan(&plan("door-open", 2)).expect("b");
    store
        .add_iteration(b, &iteration(30, "Door opens.", Verdict::Accept))
        .expect("b0");
    let c = store.add_plan(&plan("pick-place", 3)).expect("c");
    store
        .annotate(
            a,
            &Annotation {
                verdict: Some(Verdict::Accept),
                rating: Some(5),
                tags: vec!["clean".into()],
                note: "best one".into(),
                marks: Vec::new(),
                iteration_preference: Some(IterationPreference {
                    a: 0,
                    b: 1,
                    choice: Preference::BothGood,
                }),
            },
            "alice",
        )
        .expect("label");
    store
        .annotate(
            b,
            &Annotation {
                verdict: Some(Verdict::Reject),
                ..Annotation::default()
            },
            "bob",
        )
        .expect("label");
    store
        .prefer(a, b, Some(Preference::AOverB), "alice")
        .expect("pref");
    store.curate(a, true, "alice").expect("curate");
    store.curate(b, true, "alice").expect("curate");
    vec![a, b, c]
}

#[test]
fn json_export_import_round_trips_plans_labels_and_frames() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    sample_store(&a);
    let ex1 = dir.path().join("ex1");
    let o = videoagent(&[
        "export",
        "--store",
        s(&a),
        "--format",
        "json",
        "--out",
        s(&ex1),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = videoagent(&[
        "import",
        "--store",
        s(&b),
        "--from",
        s(&ex1),
        "--actor",
        "me",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("3 plans added"), "{}", text(&o));
    // Importing again adds nothing.
    let o = videoagent(&["import", "--store", s(&b), "--from", s(&ex1)]);
    assert!(
        text(&o).contains("0 plans added (3 already present)"),
        "{}",
        text(&o)
    );
    let ex2 = dir.path().join("ex2");
    let o = videoagent(&[
        "export",
        "--store",
        s(&b),
        "--format",
        "json",
        "--out",
        s(&ex2),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let d1 = read_export(&ex1).expect("ex1");
    let d2 = read_export(&ex2).expect("ex2");
    assert_eq!(d1, d2, "export -> import -> export is the identity");
    assert_eq!(d1.plans.len(), 3);
    assert_eq!(d1.preferences.len(), 1);
    assert_eq!(d1.plans[0].annotations[0].annotation.note, "best one");
    // The imported store's frames decode to the original pixels.
    let (store, _) = Store::open(&b).expect("open b");
    let p = store
        .plan_by_uid(&d1.plans[0].uid)
        .expect("q")
        .expect("imported");
    let frames = store.load_frames(p, Some(0)).expect("frames");
    assert_eq!(frames[0], frame(1));
    assert_eq!(frames[7], frame(17));
    // The import is in the audit log, by the importer, and not undoable.
    let log = store.audit_log(None).expect("log");
    assert!(log.iter().all(|e| e.action == "import" && e.actor == "me"));
    assert!(store.undo("me").expect("undo").is_none());
}

#[test]
fn import_rejects_a_tampered_frame_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a");
    sample_store(&a);
    let ex = dir.path().join("ex");
    let o = videoagent(&[
        "export",
        "--store",
        s(&a),
        "--format",
        "json",
        "--out",
        s(&ex),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let doc = read_export(&ex).expect("doc");
    // The last plan's frame: the plans before it must not be imported either.
    let victim = ex
        .join("frames")
        .join(format!("{}.png", doc.plans[2].start_frame));
    std::fs::write(&victim, b"not a png").expect("tamper");
    let b = dir.path().join("b");
    let o = videoagent(&["import", "--store", s(&b), "--from", s(&ex)]);
    assert!(!o.status.success());
    assert!(text(&o).contains("corrupt"), "{}", text(&o));
    let (store, _) = Store::open(&b).expect("open");
    assert!(store.plans(&Filter::default()).expect("plans").is_empty());
}

/// `glob("{root}/*/*/*/trajectory_*")` as the reference's `SequentialDatasetv2` does.
fn reference_trajectories(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let dirs = |p: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(p)
            .map(|r| {
                r.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    for a in dirs(root) {
        for b in dirs(&a) {
            for c in dirs(&b) {
                for t in dirs(&c) {
                    if t.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("trajectory_"))
                    {
                        out.push(t);
                    }
                }
            }
        }
    }
    out
}

fn gif_frames(path: &Path) -> Vec<image::RgbaImage> {
    use image::AnimationDecoder;
    let f = std::io::BufReader::new(std::fs::File::open(path).expect("open gif"));
    image::codecs::gif::GifDecoder::new(f)
        .expect("gif")
        .into_frames()
        .collect_frames()
        .expect("frames")
        .into_iter()
        .map(image::Frame::into_buffer)
        .collect()
}

#[test]
fn reference_export_matches_the_reference_trainer_layout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let st = dir.path().join("st");
    sample_store(&st);
    let out = dir.path().join("ref");
    let o = videoagent(&[
        "export",
        "--store",
        s(&st),
        "--format",
        "reference",
        "--out",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("2 trajectories"), "{}", text(&o));
    let trajs = reference_trajectories(&out);
    assert_eq!(trajs.len(), 2, "the curated set: {trajs:?}");
    // The task is the trajectory's parent folder (dashes read as spaces by the trainer).
    let tasks: Vec<String> = trajs
        .iter()
        .map(|t| {
            t.parent()
                .and_then(Path::file_name)
                .expect("parent")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert!(tasks.contains(&"push".to_owned()) && tasks.contains(&"door-open".to_owned()));
    let push = trajs
        .iter()
        .find(|t| t.to_string_lossy().contains("/push/"))
        .expect("push trajectory");
    for i in 0..8 {
        let png = image::open(push.join(format!("{i:02}.png"))).expect("frame png");
        assert_eq!((png.width(), png.height()), (16, 16));
    }
    assert!(!push.join("08.png").exists());
    // The refined (last) iteration is the target; the first generation is the GIF, with its
    // critique as the feedback (the last line is what the trainer reads).
    let f1 = image::open(push.join("01.png")).expect("png").to_rgb8();
    assert_eq!(f1.into_raw(), frame(21).pixels);
    let gif = gif_frames(&push.join("00_output.gif"));
    assert_eq!(gif.len(), 8);
    let feedback = std::fs::read_to_string(push.join("feedback_long.txt")).expect("feedback");
    assert_eq!(
        feedback.lines().last(),
        Some("Inconsistent glitch. The block jumps.")
    );
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join("videoagent_manifest.json")).expect("manifest"),
    )
    .expect("json");
    assert_eq!(manifest["trajectories"].as_array().map(Vec::len), Some(2));
}

#[test]
fn gif_and_png_strip_exports_show_the_plans() {
    let dir = tempfile::tempdir().expect("tempdir");
    let st = dir.path().join("st");
    let ids = sample_store(&st);
    let out = dir.path().join("media");
    let id = ids[0].0.to_string();
    let o = videoagent(&[
        "export",
        "--store",
        s(&st),
        "--format",
        "gif",
        "--plans",
        &id,
        "--out",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let gif = gif_frames(&out.join(format!("plan-{id}.gif")));
    assert_eq!(gif.len(), 8);
    assert_eq!(gif[0].width(), 16 * 4);
    let o = videoagent(&[
        "export",
        "--store",
        s(&st),
        "--format",
        "png-strip",
        "--plans",
        &id,
        "--out",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let strip = image::open(out.join(format!("plan-{id}.png"))).expect("strip");
    // Two iterations = two rows of eight 16 px frames with 1 px gaps, upscaled 4x.
    assert_eq!(strip.width(), (8 * 17 + 1) * 4);
    assert_eq!(strip.height(), (2 * 17 + 1) * 4);
    // A plan with no iteration yet is refused by name.
    let o = videoagent(&[
        "export",
        "--store",
        s(&st),
        "--format",
        "gif",
        "--plans",
        &ids[2].0.to_string(),
        "--out",
        s(&out),
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("no generated frames"), "{}", text(&o));
}

#[test]
fn mp4_export_uses_ffmpeg_or_says_how_to_get_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let st = dir.path().join("st");
    sample_store(&st);
    let out = dir.path().join("mp4");
    let o = videoagent(&[
        "export",
        "--store",
        s(&st),
        "--format",
        "mp4",
        "--plans",
        "1",
        "--out",
        s(&out),
    ]);
    if videoagent::store::export::find_ffmpeg().is_some() {
        assert!(o.status.success(), "{}", text(&o));
        let bytes = std::fs::read(out.join("plan-1.mp4")).expect("mp4");
        assert_eq!(&bytes[4..8], b"ftyp", "an MP4 container");
    } else {
        assert!(!o.status.success());
        let t = text(&o);
        assert!(t.contains("ffmpeg") && t.contains("--format gif"), "{t}");
        assert!(!out.join("plan-1.mp4").exists());
    }
}

#[test]
fn import_of_first_frames_makes_one_plan_per_image() {
    let dir = tempfile::tempdir().expect("tempdir");
    let imgs = dir.path().join("imgs");
    std::fs::create_dir_all(&imgs).expect("mkdir");
    for i in 0..2u8 {
        frame(i + 40)
            .to_image()
            .save(imgs.join(format!("start{i}.png")))
            .expect("png");
    }
    std::fs::write(imgs.join("notes.txt"), "not an image").expect("txt");
    let st = dir.path().join("st");
    let o = videoagent(&[
        "import",
        "--store",
        s(&st),
        "--images",
        s(&imgs),
        "--task",
        "door-open",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("skipped (not an image)"), "{}", text(&o));
    let (store, _) = Store::open(&st).expect("open");
    let plans = store.plans(&Filter::default()).expect("plans");
    assert_eq!(plans.len(), 2);
    assert_eq!(plans[0].instruction, "door open");
    assert_eq!(
        store.load_frames(plans[1].id, None).expect("frames"),
        vec![frame(41)]
    );
}

#[test]
fn store_check_reports_a_missing_frame_and_keeps_the_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let st = dir.path().join("st");
    sample_store(&st);
    let o = videoagent(&["store", "check", "--store", s(&st)]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("all intact"), "{}", text(&o));
    // Delete one frame file by hand.
    let victim = std::fs::read_dir(st.join("frames"))
        .expect("ls")
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).expect("ls").flatten())
        .map(|e| e.path())
        .next()
        .expect("a frame file");
    std::fs::remove_file(&victim).expect("rm");
    let o = videoagent(&["store", "check", "--store", s(&st)]);
    assert!(!o.status.success());
    assert!(text(&o).contains("1 missing frame file"), "{}", text(&o));
    let o = videoagent(&["store", "list", "--store", s(&st)]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        text(&o)
            .lines()
            .filter(|l| l.contains("tabletop") || l.contains("please"))
            .count(),
        3
    );
}

#[test]
fn concurrent_writer_processes_lose_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let st = dir.path().join("st");
    sample_store(&st);
    let workers = 4;
    let ops = 40;
    let start = std::time::Instant::now();
    let children: Vec<(std::process::Child, PathBuf)> = (0..workers)
        .map(|i| {
            let journal = dir.path().join(format!("j{i}.jsonl"));
            let child = Command::new(env!("CARGO_BIN_EXE_videoagent"))
                .args(["bench", "crash-worker", "--store", s(&st), "--journal"])
                .arg(&journal)
                .args(["--seed", &(i + 1).to_string(), "--ops", &ops.to_string()])
                .spawn()
                .expect("spawn");
            (child, journal)
        })
        .collect();
    let mut journals = Vec::new();
    for (mut c, j) in children {
        assert!(c.wait().expect("wait").success(), "a writer failed");
        journals.push(j);
    }
    let elapsed = start.elapsed();
    let (store, report) = Store::open(&st).expect("open");
    assert!(report.is_clean(), "{report}");
    let (checked, failures) = videoagent::bench::crash::verify(&store, &journals).expect("verify");
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(
        checked,
        journals
            .iter()
            .map(|j| std::fs::read_to_string(j).expect("j").lines().count())
            .sum::<usize>()
    );
    // Every writer's label changes are all in the audit log (none lost to a race).
    let log = store.audit_log(None).expect("log");
    for i in 1..=workers {
        let me = format!("worker-{i}");
        let acked = std::fs::read_to_string(dir.path().join(format!("j{}.jsonl", i - 1)))
            .expect("journal")
            .lines()
            .filter(|l| l.contains("\"label\""))
            .count();
        assert_eq!(log.iter().filter(|e| e.actor == me).count(), acked, "{me}");
    }
    eprintln!(
        "{workers} processes x {ops} ops: {checked} acknowledged changes in {:.2} s",
        elapsed.as_secs_f64()
    );
}

#[test]
fn kill_9_harness_ten_kills_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let st = dir.path().join("st");
    let json = dir.path().join("crash.json");
    let o = videoagent(&[
        "bench",
        "crash",
        "--store",
        s(&st),
        "--iterations",
        "10",
        "--min-delay-ms",
        "60",
        "--max-delay-ms",
        "300",
        "--json",
        s(&json),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("report")).expect("json");
    let kills = r["kills"].as_u64().expect("kills");
    let early = r["early_exits"].as_u64().expect("early");
    assert_eq!(early, 0, "the workers run until killed: {r}");
    assert_eq!(kills, 10);
    assert_eq!(r["failures"].as_array().map(Vec::len), Some(0));
    assert!(r["acknowledged_checked"].as_u64().expect("acks") > 0, "{r}");
    let (_, report) = Store::open(&st).expect("the store opens");
    assert!(!report.has_unrepaired(), "{report}");
}

#[test]
fn kill_9_harness_kills_training_and_it_resumes_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let st = dir.path().join("st");
    let json = dir.path().join("crash.json");
    let o = videoagent(&[
        "bench",
        "crash",
        "--store",
        s(&st),
        "--iterations",
        "0",
        "--train-kills",
        "3",
        "--train-min-delay-ms",
        "1500",
        "--train-max-delay-ms",
        "3000",
        "--json",
        s(&json),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("report")).expect("json");
    let t = &r["training"];
    assert_eq!(t["kills"], 3, "{t}");
    assert_eq!(t["early_exits"], 0, "{t}");
    assert_eq!(
        t["checkpoints_verified"].as_u64().expect("verified")
            + t["before_first_checkpoint"].as_u64().expect("before"),
        3
    );
    assert_eq!(t["matches_uninterrupted"], true, "{t}");
    assert_eq!(
        t["final_step"].as_u64(),
        t["last_resumed_step"].as_u64().map(|s| s + 2)
    );
    assert_eq!(t["temp_files_left"], 0, "{t}");
    assert_eq!(r["failures"].as_array().map(Vec::len), Some(0), "{r}");
    assert!(dir.path().join("st-train/run/model.safetensors").exists());
}

#[test]
fn lerobot_export_is_readable_with_a_parquet_reader() {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::RowAccessor;
    let dir = tempfile::tempdir().expect("tempdir");
    let st = dir.path().join("st");
    sample_store(&st);
    let out = dir.path().join("lerobot");
    let o = videoagent(&[
        "export",
        "--store",
        s(&st),
        "--format",
        "lerobot",
        "--out",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("2 episodes"), "{}", text(&o));
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("meta/info.json")).expect("info"))
            .expect("json");
    assert_eq!(info["total_episodes"], 2);
    assert_eq!(info["total_frames"], 16);
    assert_eq!(info["features"]["observation.image"]["dtype"], "image");
    // With ffmpeg on PATH every episode is also an MP4 (the `video` feature).
    let mp4 = out.join("videos/chunk-000/observation.video/episode_000001.mp4");
    if videoagent::store::export::find_ffmpeg().is_some() {
        assert_eq!(info["total_videos"], 2);
        assert_eq!(info["features"]["observation.video"]["dtype"], "video");
        let bytes = std::fs::read(&mp4).expect("episode video");
        assert_eq!(&bytes[4..8], b"ftyp", "an MP4 container");
    } else {
        assert_eq!(info["total_videos"], 0);
        assert!(!mp4.exists());
    }
    let tasks = std::fs::read_to_string(out.join("meta/tasks.jsonl")).expect("tasks");
    assert_eq!(tasks.lines().count(), 2);
    assert_eq!(
        std::fs::read_to_string(out.join("meta/episodes_stats.jsonl"))
            .expect("stats")
            .lines()
            .count(),
        2
    );
    let file =
        std::fs::File::open(out.join("data/chunk-000/episode_000000.parquet")).expect("episode 0");
    let reader = SerializedFileReader::new(file).expect("a Parquet file");
    let meta = reader.metadata().file_metadata();
    assert_eq!(meta.num_rows(), 8);
    let hf = meta
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|k| k.key == "huggingface"))
        .and_then(|k| k.value.clone())
        .expect("huggingface metadata");
    assert!(hf.contains("\"Image\""), "{hf}");
    let rows: Vec<_> = reader
        .get_row_iter(None)
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("decode rows");
    assert_eq!(rows.len(), 8);
    for (i, row) in rows.iter().enumerate() {
        let image = row.get_group(0).expect("image struct");
        let png = image::load_from_memory(image.get_bytes(0).expect("bytes").data())
            .expect("png")
            .to_rgb8();
        // Episode 0 is the first curated plan: its start frame, then its last iteration.
        let want = if i == 0 {
            frame(1)
        } else {
            frame(20 + i as u8)
        };
        assert_eq!(png.into_raw(), want.pixels, "frame {i}");
        assert_eq!(row.get_float(1).expect("timestamp"), i as f32 / 4.0);
        assert_eq!(row.get_long(2).expect("frame_index"), i as i64);
        assert_eq!(row.get_long(3).expect("episode_index"), 0);
        assert_eq!(row.get_long(4).expect("index"), i as i64);
        assert_eq!(row.get_long(5).expect("task_index"), 0);
    }
}

/// Imports `store.json` text through a scratch export folder that has `frames/` of `good`.
fn import_text(good: &Path, json: &[u8], scratch: &Path, store: &Store) -> bool {
    let _ = std::fs::remove_dir_all(scratch);
    std::fs::create_dir_all(scratch.join("frames")).expect("mkdir");
    for e in std::fs::read_dir(good.join("frames"))
        .expect("ls")
        .flatten()
    {
        std::fs::copy(e.path(), scratch.join("frames").join(e.file_name())).expect("copy");
    }
    std::fs::write(scratch.join("store.json"), json).expect("write");
    videoagent::store::db::import_json(store, scratch, "fuzz").is_ok()
}

/// Malformed exports in general are fuzzed in `tests/fuzz` (with the corpus in
/// `tests/corpus/store_json`); this one needs valid frames to get as far as the labels.
#[test]
fn an_export_with_a_rating_outside_1_to_5_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    sample_store(&src);
    let good = dir.path().join("good");
    let (source, _) = Store::open(&src).expect("open");
    videoagent::store::db::export_json(&source, &[], &good).expect("export");
    let (target, _) = Store::open(&dir.path().join("target")).expect("open");
    let scratch = dir.path().join("scratch");
    let json = std::fs::read_to_string(good.join("store.json")).expect("json");
    assert!(import_text(&good, json.as_bytes(), &scratch, &target));
    let bad = json.replacen("\"rating\": 5", "\"rating\": 9", 1);
    assert_ne!(bad, json);
    let (fresh, _) = Store::open(&dir.path().join("fresh")).expect("open");
    assert!(!import_text(&good, bad.as_bytes(), &scratch, &fresh));
    assert!(fresh.plans(&Filter::default()).expect("plans").is_empty());
}

#[test]
fn folder_exports_refuse_an_occupied_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let st = dir.path().join("st");
    sample_store(&st);
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).expect("mkdir");
    std::fs::write(out.join("keep.txt"), "mine").expect("write");
    for format in ["json", "reference", "lerobot"] {
        let o = videoagent(&[
            "export",
            "--store",
            s(&st),
            "--format",
            format,
            "--out",
            s(&out),
        ]);
        assert!(!o.status.success(), "{format}");
        assert!(text(&o).contains("not empty"), "{}", text(&o));
    }
    assert_eq!(
        std::fs::read_to_string(out.join("keep.txt")).expect("kept"),
        "mine"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("ls").count(),
        2,
        "no staging left"
    );
}
