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

#[test]
fn plan_with_store_records_the_plan_and_every_iteration() {
    use videoagent::store::db::{Filter, Store, Verdict};
    use videoagent::store::plan_record::read_frame;

    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("p");
    let store_dir = dir.path().join("store");
    let o = videoagent(&[
        "plan",
        "--task",
        "push",
        "--seed",
        "1000003",
        "--steps",
        "2",
        "--device",
        "cpu",
        "--refine",
        "1",
        "--critic",
        "perception",
        "--out",
        out.to_str().expect("utf-8"),
        "--store",
        store_dir.to_str().expect("utf-8"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("recorded as plan #1"));

    let (store, report) = Store::open(&store_dir).expect("the store opens");
    assert!(report.is_clean(), "{report}");
    let plans = store.plans(&Filter::default()).expect("plans");
    assert_eq!(plans.len(), 1);
    let detail = store.plan(plans[0].id).expect("plan");
    assert_eq!(
        (detail.summary.task.as_str(), detail.summary.env_seed),
        ("push", 1_000_003)
    );
    assert_eq!(detail.sampler.steps, 2);

    let record = plan_json(&out);
    let iterations = record["refinement"]["iterations"]
        .as_array()
        .expect("iterations");
    assert_eq!(detail.iterations.len(), iterations.len());
    for (i, (stored, it)) in detail.iterations.iter().zip(iterations).enumerate() {
        let review = &it["review"];
        let verdict = match review["verdict"].as_str().expect("verdict") {
            "accept" => Some(Verdict::Accept),
            "reject" => Some(Verdict::Reject),
            _ => None,
        };
        assert_eq!(stored.verdict, verdict, "iteration {i}");
        assert_eq!(
            stored.critique,
            review["feedback"].as_str().expect("feedback")
        );
        assert_eq!(
            stored.findings.len(),
            review["findings"].as_array().expect("findings").len()
        );
        let frames = store
            .load_frames(plans[0].id, Some(i))
            .expect("frames load and match their hashes");
        let folder = out.join(it["dir"].as_str().expect("dir"));
        assert_eq!(frames.len(), 8);
        for (k, frame) in frames.iter().enumerate() {
            let on_disk = read_frame(&folder.join(format!("frames/{k:02}.png"))).expect("png");
            assert_eq!(frame, &on_disk, "iteration {i} frame {k}");
        }
    }
}

/// The execution critic replays each plan in the world: its verdict is the rollout's outcome.
#[test]
fn the_execution_critic_judges_by_running_the_plan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("plan");
    let o = videoagent(&[
        "plan",
        "--task",
        "button-press",
        "--seed",
        "5",
        "--steps",
        "2",
        "--refine",
        "1",
        "--critic",
        "execution",
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let record = plan_json(&out);
    let iterations = record["refinement"]["iterations"]
        .as_array()
        .expect("iterations");
    assert!(!iterations.is_empty());
    for it in iterations {
        let verdict = it["review"]["verdict"].as_str().expect("a verdict");
        assert!(verdict == "accept" || verdict == "reject", "{it}");
    }
}

/// `critic-agreement` on one start: the table and the JSON; execution itself cannot be
/// measured against execution.
#[test]
fn critic_agreement_reports_each_critic_against_execution() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("agreement.json");
    let o = videoagent(&[
        "critic-agreement",
        "--tasks",
        "push",
        "--views",
        "0",
        "--seeds",
        "1",
        "--steps",
        "2",
        "--json",
        json.to_str().expect("utf-8"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(stdout.contains("1 plans of"), "{stdout}");
    assert!(stdout.contains("perception"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("report")).expect("json");
    assert_eq!(report["plans"].as_array().map(Vec::len), Some(1));
    assert_eq!(report["agreement"][0]["critic"], "perception");
    assert_eq!(report["agreement"][0]["judged"], 1);

    let bad = videoagent(&["critic-agreement", "--critics", "execution"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cannot be measured"));
}
