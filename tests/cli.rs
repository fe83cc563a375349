//! The `videoagent` binary end to end: the shipped default model plans, bad input gets a clear
//! one-line error and a non-zero exit code, and nothing half-written is left behind.

use std::process::Command;

fn videoagent(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_videoagent"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the binary runs")
}

/// `dataset` arguments for `episodes` push episodes of view 0 at 32 px into `out`.
fn push_dataset_args<'a>(episodes: &'a str, out: &'a str) -> [&'a str; 11] {
    [
        "dataset",
        "--tasks",
        "push",
        "--views",
        "0",
        "--episodes",
        episodes,
        "--size",
        "32",
        "--out",
        out,
    ]
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn plan_uses_the_shipped_default_model_and_is_reproducible() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    for out in [&a, &b] {
        let o = videoagent(&[
            "plan",
            "--task",
            "push",
            "--seed",
            "1000000",
            "--steps",
            "2",
            "--device",
            "cpu",
            "--out",
            out.to_str().expect("utf-8"),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.join("plan.json")).expect("plan.json"))
            .expect("json");
    assert!(
        record["model"]
            .as_str()
            .expect("model")
            .contains("tabletop-cpu"),
        "{record}"
    );
    assert_eq!(record["frames"].as_array().expect("frames").len(), 8);
    for i in 0..8 {
        let name = format!("frames/{i:02}.png");
        assert_eq!(
            std::fs::read(a.join(&name)).expect("frame"),
            std::fs::read(b.join(&name)).expect("frame"),
            "{name} differs between runs"
        );
    }
    assert!(a.join("plan.gif").exists() && a.join("strip.png").exists());
}

#[test]
fn bad_input_exits_non_zero_with_one_clear_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("d");
    let out = out.to_str().expect("utf-8");
    let cases: [(&[&str], &str); 17] = [
        (
            &["dataset", "--tasks", "fly", "--out", out],
            "unknown task 'fly'",
        ),
        (&["quality", "--resample"], "--resample needs --refine K"),
        (
            &["improve", "--successes-per-task", "0", "--out", out],
            "--successes-per-task must be at least 1",
        ),
        (
            &[
                "dataset",
                "--episodes",
                "3",
                "--candidates",
                "2",
                "--out",
                out,
            ],
            "--candidates 2 is out of range",
        ),
        (
            &["plan", "--task", "push", "--precision", "fp8", "--out", out],
            "unknown precision (valid: f32, tf32, bf16)",
        ),
        (
            &[
                "plan",
                "--task",
                "push",
                "--critic-rejects",
                "fly",
                "--out",
                out,
            ],
            "--critic-rejects: unknown kind 'fly' (valid: vanished, appeared,",
        ),
        (
            &["dataset", "--views", "top", "--out", out],
            "unknown view 'top'",
        ),
        (
            &["dataset", "--world", "mars", "--out", out],
            "unknown world 'mars'",
        ),
        (
            &["dataset", "--size", "9999", "--out", out],
            "frame size 9999",
        ),
        (
            &[
                "plan",
                "--task",
                "push",
                "--model",
                "/nonexistent/model",
                "--out",
                out,
            ],
            "/nonexistent/model",
        ),
        (
            &[
                "train",
                "--data",
                "/nonexistent/data",
                "--out",
                out,
                "--steps",
                "1",
            ],
            "/nonexistent/data",
        ),
        (
            &["refine-data", "--data", "/nonexistent/data", "--out", out],
            "/nonexistent/data",
        ),
        (
            &[
                "refine-data",
                "--data",
                "/nonexistent/data",
                "--out",
                out,
                "--generations",
                "3",
            ],
            "--generations must be 1 or 2",
        ),
        (
            &[
                "train",
                "--refine-data",
                "/nonexistent/refine",
                "--out",
                out,
                "--steps",
                "1",
            ],
            "/nonexistent/refine",
        ),
        (
            &[
                "train",
                "--clip",
                "/nonexistent/clip",
                "--out",
                out,
                "--steps",
                "1",
            ],
            "/nonexistent/clip/config.json",
        ),
        (
            &["plan", "--task", "push", "--critic", "local", "--out", out],
            "--critic local needs --critic-model DIR",
        ),
        (
            &[
                "plan",
                "--task",
                "push",
                "--critic",
                "local",
                "--critic-model",
                "/nonexistent/moondream",
                "--out",
                out,
            ],
            "/nonexistent/moondream/config.json",
        ),
    ];
    for (args, expected) in cases {
        let o = videoagent(args);
        let err = stderr(&o);
        assert!(!o.status.success(), "{args:?} must fail");
        assert!(err.contains(expected), "{args:?}: {err}");
        assert_eq!(
            err.trim().lines().count(),
            1,
            "{args:?}: one line expected, got {err}"
        );
    }
    assert!(!std::path::Path::new(out).join("manifest.json").exists());
}

#[test]
fn a_corrupt_model_file_is_named_in_the_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = dir.path().join("model");
    std::fs::create_dir(&model).expect("mkdir");
    let shipped =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sample_data/models/tabletop-cpu");
    for f in ["config.json", "text_encoder.safetensors"] {
        std::fs::copy(shipped.join(f), model.join(f)).expect("copy");
    }
    let weights = std::fs::read(shipped.join("model.safetensors")).expect("weights");
    std::fs::write(
        model.join("model.safetensors"),
        &weights[..weights.len() / 2],
    )
    .expect("truncate");
    let out = dir.path().join("plan");
    let o = videoagent(&[
        "plan",
        "--task",
        "push",
        "--model",
        model.to_str().expect("utf-8"),
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("model.safetensors"), "{}", stderr(&o));
    assert!(
        !out.exists(),
        "no plan folder may be written from a corrupt model"
    );
}

#[test]
fn run_executes_the_expert_plan_and_a_model_plan_and_writes_run_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let expert = dir.path().join("expert");
    let o = videoagent(&[
        "run",
        "--task",
        "button-press",
        "--view",
        "1",
        "--seed",
        "1000001",
        "--expert-plan",
        "--out",
        expert.to_str().expect("utf-8"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(expert.join("run.json")).expect("run.json"))
            .expect("json");
    assert_eq!(run["success"], true, "{run}");
    assert_eq!(run["planner"], "expert");
    assert!(run["steps"].as_u64().expect("steps") <= 150);
    assert!(run["timings_ms"]["total"].as_f64().expect("total") > 0.0);
    for f in [
        "rollout.gif",
        "plan.gif",
        "plan.json",
        "frames/00.png",
        "frames/07.png",
    ] {
        assert!(expert.join(f).exists(), "{f} missing");
    }

    // The shipped model plans (2 DDIM steps to stay fast); whatever the outcome, the episode
    // ends within its step limit and says why it failed if it did.
    let model = dir.path().join("model");
    let o = videoagent(&[
        "run",
        "--task",
        "push",
        "--seed",
        "1000000",
        "--steps",
        "2",
        "--max-steps",
        "40",
        "--replan",
        "1",
        "--device",
        "cpu",
        "--out",
        model.to_str().expect("utf-8"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model.join("run.json")).expect("run.json"))
            .expect("json");
    assert!(
        run["planner"]
            .as_str()
            .expect("planner")
            .contains("tabletop-cpu")
    );
    assert!(run["steps"].as_u64().expect("steps") <= 40, "{run}");
    assert!(run["replans"].as_u64().expect("replans") <= 1);
    assert!(run["success"].as_bool().expect("success") || run["failure"].is_string());
    assert!(model.join("rollout.gif").exists() && model.join("frames/07.png").exists());
}

#[test]
fn run_rejects_bad_input_with_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("r");
    let out = out.to_str().expect("utf-8");
    let cases: [(&[&str], &str); 3] = [
        (
            &["run", "--task", "fly", "--expert-plan", "--out", out],
            "unknown task 'fly'",
        ),
        (
            &[
                "run",
                "--task",
                "push",
                "--view",
                "top",
                "--expert-plan",
                "--out",
                out,
            ],
            "unknown view 'top'",
        ),
        (
            &[
                "run",
                "--task",
                "push",
                "--model",
                "/nonexistent/model",
                "--out",
                out,
            ],
            "/nonexistent/model",
        ),
    ];
    for (args, expected) in cases {
        let o = videoagent(args);
        let err = stderr(&o);
        assert!(!o.status.success(), "{args:?} must fail");
        assert!(err.contains(expected), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
}

/// The paper's table on a tiny grid: the report, the chart and the episode log are written, a
/// second run reuses every episode, and a bad mode is one clear line.
#[test]
fn eval_writes_the_table_and_a_rerun_reuses_every_episode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("eval.json");
    let json_arg = json.to_str().expect("utf-8");
    let args = [
        "eval",
        "--tasks",
        "push,button-press",
        "--views",
        "0",
        "--seeds",
        "1",
        "--modes",
        "expert,baseline",
        "--max-steps",
        "150",
        "--json",
        json_arg,
    ];
    let out = videoagent(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        stdout.contains("| method | push | button-press | overall |"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| expert |") && stdout.contains("| baseline |"),
        "{stdout}"
    );
    assert!(stdout.contains("4 episodes (4 run now, 0 from"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("report")).expect("json");
    let rows = report["table"]["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 2, "one row per method");
    let chart = image::open(json.with_extension("png")).expect("chart PNG");
    assert!(chart.width() > 100 && chart.height() > 100);
    let log = std::fs::read_to_string(json.with_extension("jsonl")).expect("episode log");
    assert_eq!(log.lines().count(), 4, "one line per episode");

    let again = videoagent(&args);
    assert!(again.status.success(), "{}", stderr(&again));
    let stdout = String::from_utf8_lossy(&again.stdout).into_owned();
    assert!(stdout.contains("4 episodes (0 run now, 4 from"), "{stdout}");

    let bad = videoagent(&["eval", "--modes", "expert,dance", "--json", json_arg]);
    assert!(!bad.status.success());
    let err = stderr(&bad);
    assert!(err.contains("dance"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// Without the MetaWorld venv, `tasks` still lists MetaWorld's paper tasks and says what to
/// run, and running a task fails with one line naming the setup command.
#[test]
fn metaworld_without_its_venv_says_how_to_set_it_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let venv = dir.path().join("no-venv");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_videoagent"))
            .args(args)
            .env("RUST_LOG", "warn")
            .env("VIDEOAGENT_METAWORLD_VENV", &venv)
            .output()
            .expect("the binary runs")
    };
    let o = run(&["tasks", "--world", "metaworld", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let world = &report[0];
    assert_eq!(world["tasks"].as_array().map(Vec::len), Some(11));
    assert_eq!(world["views"][2]["name"], "corner3");
    let hint = world["setup_needed"].as_str().expect("needs setup");
    assert!(hint.contains("videoagent setup metaworld --venv"), "{hint}");

    let o = run(&[
        "dataset",
        "--world",
        "metaworld",
        "--tasks",
        "door-open",
        "--views",
        "corner",
        "--episodes",
        "1",
        "--out",
    ]
    .iter()
    .copied()
    .chain([dir.path().join("ds").to_str().expect("utf-8")])
    .collect::<Vec<_>>());
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("no Python interpreter") && err.contains("videoagent setup metaworld"),
        "{err}"
    );
    assert!(!dir.path().join("ds").exists(), "nothing half-written");
}

#[test]
fn a_closed_stdout_ends_the_listing_quietly() {
    // Like `videoagent tasks | head -0`: the reader is gone before the first line is written.
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_videoagent"))
        .arg("tasks")
        .stdout(writer)
        .output()
        .expect("the binary runs");
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{err}");
    }
}

/// A training run whose stderr is not a terminal (a background run writing to a log file)
/// says how far it is at every checkpoint, since the progress bar cannot be drawn there.
#[test]
fn background_runs_log_their_progress() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let run = dir.path().join("run");
    let path = |p: &std::path::Path| p.to_str().expect("utf-8").to_owned();
    // Piped stderr: the bars draw nothing, log lines say how far the work is.
    let logged = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_videoagent"))
            .args(args)
            .env("RUST_LOG", "info")
            .output()
            .expect("the binary runs")
    };
    let o = logged(&push_dataset_args("2", &path(&data)));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("episodes: 2/2"),
        "a command's hidden bar logs where it ended: {}",
        stderr(&o)
    );
    let o = logged(&[
        "train",
        "--data",
        &path(&data),
        "--out",
        &path(&run),
        "--steps",
        "4",
        "--batch",
        "1",
        "--checkpoint-every",
        "2",
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    for step in ["train: 2/4 loss", "train: 4/4 loss"] {
        assert!(err.contains(step), "no '{step}' in: {err}");
    }
    // The refinement loop's line per plan (verdict and critique) reaches the log too.
    let o = logged(&[
        "plan",
        "--task",
        "push",
        "--model",
        &path(&run),
        "--steps",
        "2",
        "--refine",
        "1",
        "--critic",
        "perception",
        "--out",
        &path(&dir.path().join("plan")),
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("plan 0: reject") || err.contains("plan 0: accept"),
        "no verdict line for plan 0 in: {err}"
    );
}

/// A new run's model says which world its plans show: the one its demonstrations come from
/// (evaluation warns when a model is used on another world).
#[test]
fn a_new_run_records_the_world_of_its_demonstrations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let path = |p: &std::path::Path| p.to_str().expect("utf-8").to_owned();
    let o = videoagent(&push_dataset_args("1", &path(&data)));
    assert!(o.status.success(), "{}", stderr(&o));
    let world_of_a_run_on = |name: &str| {
        let out = dir.path().join(name);
        let o = videoagent(&[
            "train",
            "--data",
            &path(&data),
            "--out",
            &path(&out),
            "--image-size",
            "16",
            "--steps",
            "1",
            "--batch",
            "1",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("config.json")).expect("config"))
                .expect("json");
        config["world"].clone()
    };
    assert_eq!(world_of_a_run_on("run-1"), "tabletop");
    // The same frames relabelled as another world's demonstrations.
    let manifest = data.join("manifest.json");
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).expect("manifest")).expect("json");
    json["world"] = "metaworld".into();
    std::fs::write(&manifest, serde_json::to_vec(&json).expect("json")).expect("write");
    assert_eq!(world_of_a_run_on("run-2"), "metaworld");
}

#[test]
fn bench_model_times_the_shipped_config_and_names_a_missing_reference() {
    let dir = std::env::temp_dir().join(format!("videoagent-bench-model-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let json = dir.join("bench.json");
    let json_arg = json.to_str().expect("a UTF-8 temp path");
    let args = [
        "bench",
        "model",
        "--configs",
        "default",
        "--train-steps",
        "1",
        "--reps",
        "1",
        "--plan-steps",
        "1",
        "--json",
        json_arg,
    ];
    let out = videoagent(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("bench.json")).expect("JSON");
    let row = &report["configs"][0];
    assert_eq!(row["config"], "default");
    assert!(
        row["forward_ms"].as_f64().expect("forward_ms") > 0.0,
        "{row}"
    );
    assert!(
        row["train_steps_per_sec"]
            .as_f64()
            .expect("train_steps_per_sec")
            > 0.0,
        "{row}"
    );
    assert!(row["reference"].is_null());

    let missing = dir.join("no-reference-here");
    let out = videoagent(&[
        "bench",
        "model",
        "--configs",
        "default",
        "--train-steps",
        "0",
        "--reference",
        missing.to_str().expect("a UTF-8 temp path"),
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("guided_diffusion") && err.contains("no-reference-here"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).expect("temp dir");
}
