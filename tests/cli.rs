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
    let cases: [(&[&str], &str); 9] = [
        (
            &["dataset", "--tasks", "fly", "--out", out],
            "unknown task 'fly'",
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
