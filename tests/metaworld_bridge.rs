//! The MetaWorld bridge client against a real child process: `tests/fake_metaworld_bridge.py`
//! speaks the protocol without MetaWorld (plain Python 3), and misbehaves on request. Every
//! failure must come back as a clean error, leave no zombie, and let the next reset start a
//! fresh process. Skipped (with a message) where no `python3` is on the PATH.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use videoagent::env::metaworld::bridge::{Bridge, BridgeConfig, BridgeError, Script};
use videoagent::env::metaworld::{MetaWorld, default_config};
use videoagent::env::{Action, World, WorldError};

fn python() -> Option<PathBuf> {
    let ok = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipped: no python3 on the PATH");
    }
    ok.then(|| PathBuf::from("python3"))
}

fn config(python: &Path, fake: &str, timeout: Duration) -> BridgeConfig {
    BridgeConfig {
        python: python.to_owned(),
        script: Script::File(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake_metaworld_bridge.py"),
        ),
        startup_timeout: timeout,
        request_timeout: timeout,
        env: vec![("FAKE_BRIDGE".into(), fake.into())],
        install_hint: "videoagent setup metaworld".to_owned(),
    }
}

fn world(python: &Path, fake: &str) -> MetaWorld {
    MetaWorld::with_config(32, config(python, fake, Duration::from_secs(2))).expect("world")
}

/// The process is gone and reaped: no /proc entry left that is still our child.
fn reaped(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    // Fields after the command's closing parenthesis: state, ppid, ...
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ppid: Option<u32> = after.split_whitespace().nth(1).and_then(|p| p.parse().ok());
    ppid != Some(std::process::id())
}

fn bridge_error(e: WorldError) -> BridgeError {
    match e {
        WorldError::Bridge(b) => b,
        other => panic!("expected a bridge error, got {other}"),
    }
}

#[test]
fn episode_through_the_protocol() {
    let Some(py) = python() else { return };
    let mut w = world(&py, "");
    assert_eq!(w.bridge_pid(), None, "opening the world starts nothing");
    let obs = w.reset("door-open", 1, 7).expect("reset");
    assert_eq!((obs.rgb.width, obs.rgb.height), (32, 32));
    assert_eq!(obs.segmentation.len(), 32 * 32);
    assert_eq!(obs.mask_pixels("door_link").len(), 32 * 32 / 2);
    assert_eq!(obs.objects[0].name, "door_link");
    let expert = w.expert_action().expect("expert");
    assert_eq!(expert, Action::new(0.25, 0.0, -0.5, 1.0));
    let mut outcome = w.step(expert).expect("step");
    assert!(!outcome.done);
    assert_eq!(outcome.observation.rgb.pixel(0, 0), [1, 100, 200]);
    for _ in 0..2 {
        outcome = w.step(expert).expect("step");
    }
    assert!(
        outcome.success && outcome.done,
        "the fake succeeds at step 3"
    );
    assert_eq!(w.observe().expect("observe").rgb, outcome.observation.rgb);
    // The fake camera looks straight down from (0, 0.6, 1): the centre pixel is below it.
    let centre = w.pixel_to_table([16.0, 16.0], 32, 0.0).expect("camera");
    assert!(centre[0].abs() < 1e-6 && (centre[1] - 0.6).abs() < 1e-6);
    let back = w.table_to_pixel(centre, 32, 0.0).expect("camera");
    assert!((back[0] - 16.0).abs() < 1e-4 && (back[1] - 16.0).abs() < 1e-4);
    assert_eq!(w.depth().expect("depth"), vec![1.0; 32 * 32]);
    assert_eq!(w.starts(), 1);
}

#[test]
fn refused_requests_keep_the_bridge() {
    let Some(py) = python() else { return };
    let mut w = world(&py, "");
    w.reset("door-open", 0, 0).expect("reset");
    let pid = w.bridge_pid();
    let err = bridge_error(
        w.reset("basketball", 0, 0)
            .expect_err("the fake has no basketball"),
    );
    assert!(
        matches!(&err, BridgeError::Remote { kind, .. } if kind == "unknown_task"),
        "{err}"
    );
    assert_eq!(w.bridge_pid(), pid, "a refusal is not a crash");
    assert!(matches!(
        w.step(Action::default()),
        Err(WorldError::NotReset)
    ));
}

/// Runs `action` into a misbehaving fake and checks the error, the reaping and the restart.
fn fails_then_restarts(action: f32, check: impl Fn(&BridgeError) -> bool) {
    let Some(py) = python() else { return };
    let mut w = world(&py, "");
    w.reset("door-open", 0, 0).expect("reset");
    let pid = w.bridge_pid().expect("running");
    let start = Instant::now();
    let Err(err) = w.step(Action::new(action, 0.0, 0.0, 0.0)) else {
        panic!("the fake answered a step that should fail");
    };
    let err = bridge_error(err);
    assert!(check(&err), "unexpected error: {err}");
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "bounded by the timeout"
    );
    assert_eq!(w.bridge_pid(), None, "a broken bridge is dropped");
    assert!(reaped(pid), "pid {pid} left behind");
    assert!(matches!(
        w.step(Action::default()),
        Err(WorldError::NotReset)
    ));
    w.reset("door-open", 0, 0)
        .expect("the next reset starts a fresh bridge");
    assert_eq!(w.starts(), 2);
    assert_ne!(w.bridge_pid(), Some(pid));
}

#[test]
fn a_hung_request_times_out() {
    fails_then_restarts(
        0.5,
        |e| matches!(e, BridgeError::Timeout { op, .. } if op == "step"),
    );
}

#[test]
fn a_crash_mid_reply_reports_the_exit_status() {
    fails_then_restarts(
        0.625,
        |e| matches!(e, BridgeError::Crashed { status, .. } if status.contains('3')),
    );
}

#[test]
fn a_garbage_line_is_a_protocol_error() {
    fails_then_restarts(
        0.75,
        |e| matches!(e, BridgeError::Protocol { detail, .. } if detail.contains("Traceback")),
    );
}

#[test]
fn a_quiet_exit_is_a_crash() {
    fails_then_restarts(0.875, |e| matches!(e, BridgeError::Crashed { .. }));
}

#[test]
fn protocol_version_mismatch_is_refused() {
    let Some(py) = python() else { return };
    let err = Bridge::start(&config(&py, "protocol=2", Duration::from_secs(5)))
        .err()
        .expect("mismatch");
    assert!(
        matches!(
            err,
            BridgeError::VersionMismatch {
                expected: 1,
                found: 2
            }
        ),
        "{err}"
    );
}

#[test]
fn missing_packages_name_the_install_command() {
    let Some(py) = python() else { return };
    let mut w = world(&py, "import_error=No module named 'metaworld'");
    let err = bridge_error(w.reset("door-open", 0, 0).expect_err("no packages"));
    let text = err.to_string();
    assert!(matches!(err, BridgeError::PackagesMissing { .. }), "{text}");
    assert!(
        text.contains("No module named 'metaworld'") && text.contains("videoagent setup metaworld")
    );
}

#[test]
fn a_missing_interpreter_names_the_setup_command() {
    let venv = Path::new("/nonexistent/videoagent-venv");
    let mut w = MetaWorld::with_config(32, default_config(venv)).expect("world");
    let err = bridge_error(w.reset("door-open", 0, 0).expect_err("no python"));
    let text = err.to_string();
    assert!(matches!(err, BridgeError::PythonMissing { .. }), "{text}");
    assert!(
        text.contains("/nonexistent/videoagent-venv/bin/python")
            && text.contains("videoagent setup metaworld --venv /nonexistent/videoagent-venv"),
        "{text}"
    );
}

#[test]
fn a_silent_start_times_out_and_is_reaped() {
    let Some(py) = python() else { return };
    let start = Instant::now();
    let err = Bridge::start(&config(&py, "hang_hello", Duration::from_secs(1)))
        .err()
        .expect("no hello");
    assert!(
        matches!(&err, BridgeError::Timeout { op, .. } if op == "hello"),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn dropping_the_world_reaps_the_bridge() {
    let Some(py) = python() else { return };
    let mut w = world(&py, "");
    w.reset("door-open", 0, 0).expect("reset");
    let pid = w.bridge_pid().expect("running");
    assert!(!reaped(pid));
    drop(w);
    assert!(reaped(pid), "pid {pid} left behind");
}

#[test]
fn raw_requests_carry_fields_and_payloads() {
    let Some(py) = python() else { return };
    let mut bridge = Bridge::start(&config(&py, "", Duration::from_secs(5))).expect("start");
    assert_eq!(bridge.hello().bridge, "fake");
    let reply = bridge
        .request(
            "reset",
            serde_json::json!({"task": "door-open", "size": 16}),
        )
        .expect("reset");
    let rgb = reply.payload("rgb").expect("rgb");
    assert_eq!(
        (rgb.dtype.as_str(), rgb.shape.as_slice()),
        ("u1", &[16, 16, 3][..])
    );
    assert_eq!(rgb.bytes.len(), 16 * 16 * 3);
    assert_eq!(reply.fields["labels"][3], "door_link");
    let err = bridge
        .request("fly", serde_json::json!({}))
        .expect_err("unknown op");
    assert!(matches!(&err, BridgeError::Remote { kind, .. } if kind == "bad_request"));
    assert!(!err.is_fatal());
}
