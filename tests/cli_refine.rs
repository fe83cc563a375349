//! `videoagent plan --refine K --critic ...` end to end with the shipped model: every
//! iteration lands in the plan folder and plan.json, and an unreachable VLM critic is
//! recorded as unavailable instead of failing the plan.

use std::process::Command;

fn videoagent(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_videoagent"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("OPENAI_API_KEY")
        .output()
        .expect("the binary runs")
}

fn plan_json(dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("plan.json")).expect("plan.json")).expect("json")
}

#[test]
fn refine_writes_every_iteration_with_its_critique() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("p");
    let o = videoagent(&[
        "plan",
        "--task",
        "push",
        "--steps",
        "2",
        "--device",
        "cpu",
        "--refine",
        "2",
        "--critic",
        "perception",
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let record = plan_json(&out);
    let refinement = &record["refinement"];
    assert_eq!(refinement["critic"], "perception");
    let iterations = refinement["iterations"].as_array().expect("iterations");
    assert!(!iterations.is_empty() && iterations.len() <= 3);
    let chosen = refinement["chosen"].as_u64().expect("chosen") as usize;
    assert!(chosen < iterations.len());
    for (i, it) in iterations.iter().enumerate() {
        let sub = out.join(it["dir"].as_str().expect("dir"));
        assert!(sub.join("plan.gif").exists() && sub.join("frames/07.png").exists());
        let critique = std::fs::read_to_string(sub.join("critique.txt")).expect("critique");
        assert!(
            critique.starts_with("accept") || critique.starts_with("reject"),
            "{critique}"
        );
        assert!(it["review"]["latency_ms"].as_f64().is_some());
        if i > 0 {
            let prompt = it["prompt"].as_str().expect("prompt");
            assert!(
                prompt.starts_with("push the block to the target."),
                "{prompt}"
            );
        }
    }
    assert_eq!(
        std::fs::read(out.join("frames/07.png")).expect("top frame"),
        std::fs::read(out.join(format!("iterations/{chosen:02}/frames/07.png"))).expect("frame"),
        "the top-level plan is the chosen iteration"
    );
    assert!(out.join("iterations.png").exists());
}

#[test]
fn an_unreachable_vlm_is_recorded_as_unavailable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("p");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let url = format!("http://127.0.0.1:{port}/v1");
    let o = videoagent(&[
        "plan",
        "--task",
        "push",
        "--steps",
        "2",
        "--device",
        "cpu",
        "--refine",
        "3",
        "--critic",
        "vlm",
        "--critic-url",
        &url,
        "--critic-timeout",
        "2",
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let refinement = &plan_json(&out)["refinement"];
    assert_eq!(refinement["stop"], "critic_unavailable");
    let review = &refinement["iterations"][0]["review"];
    assert_eq!(review["verdict"], "unavailable");
    assert!(
        review["reason"]
            .as_str()
            .expect("reason")
            .contains("cannot reach")
    );

    let o = videoagent(&["plan", "--task", "push", "--critic", "oracle", "--out", "x"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown critic 'oracle'"));
}
