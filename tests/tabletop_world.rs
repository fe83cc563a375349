//! Behaviour of the embedded world: determinism, segmentation, physics sanity, success
//! checks, bad input, and the dataset round trip.

use videoagent::env::tabletop::render::{CAMERAS, project};
use videoagent::env::{Action, World, WorldError, demo::record_expert, open_world};

fn world(size: u32) -> Box<dyn World> {
    open_world("tabletop", size).expect("tabletop opens")
}

fn task_names(w: &dyn World) -> Vec<String> {
    w.tasks().into_iter().map(|t| t.name).collect()
}

#[test]
fn same_start_gives_identical_frames_and_states() {
    let mut a = world(64);
    let mut b = world(64);
    for task in task_names(a.as_ref()) {
        let da = record_expert(a.as_mut(), &task, 2, 7).expect("episode");
        // Interleave another episode in `b` first: no hidden state may leak between resets.
        record_expert(b.as_mut(), "push", 0, 99).expect("episode");
        let db = record_expert(b.as_mut(), &task, 2, 7).expect("episode");
        assert_eq!(da.frames, db.frames, "{task}: frames differ");
        assert_eq!(da.segmentations, db.segmentations, "{task}: masks differ");
        assert_eq!(da.states, db.states, "{task}: states differ");
    }
}

#[test]
fn seeds_and_views_change_the_start() {
    let mut w = world(64);
    let f0 = w.reset("push", 0, 1).expect("reset").rgb;
    let f1 = w.reset("push", 0, 2).expect("reset").rgb;
    let v1 = w.reset("push", 1, 1).expect("reset").rgb;
    let stepped = w
        .step(videoagent::env::Action::new(1.0, 0.0, 0.0, 0.0))
        .expect("step")
        .observation;
    assert_eq!(
        w.observe().expect("observe").rgb,
        stepped.rgb,
        "observe shows the current state"
    );
    assert_ne!(f0, f1, "seed must move objects");
    assert_ne!(f0, v1, "views must differ");
}

#[test]
fn segmentation_agrees_with_object_poses() {
    let mut w = world(64);
    for task in task_names(w.as_ref()) {
        for (view, camera) in CAMERAS.iter().enumerate() {
            let obs = w.reset(&task, view, 3).expect("reset");
            for name in ["block", "ring", "button", "peg"] {
                let Some(pose) = obs.object(name) else {
                    continue;
                };
                let pixels = obs.mask_pixels(name);
                assert!(!pixels.is_empty(), "{task}/{view}: {name} has no pixels");
                let n = pixels.len() as f32;
                let cx = pixels.iter().map(|p| p.0 as f32 + 0.5).sum::<f32>() / n;
                let cy = pixels.iter().map(|p| p.1 as f32 + 0.5).sum::<f32>() / n;
                let expected = project(
                    camera,
                    64,
                    rapier2d::math::Vector::new(pose.x, pose.y),
                    pose.z,
                );
                let err = (cx - expected.x).hypot(cy - expected.y);
                assert!(
                    err < 1.5,
                    "{task}/{view}: {name} mask centroid is {err:.2} px from its pose"
                );
            }
            let gripper = obs.mask_pixels("gripper");
            assert!(!gripper.is_empty(), "the gripper is always visible");
        }
    }
}

#[test]
fn masks_cover_the_coloured_pixels() {
    let mut w = world(64);
    let obs = w.reset("push", 0, 5).expect("reset");
    let block = obs.mask_pixels("block");
    let red = block
        .iter()
        .filter(|(x, y)| {
            let [r, g, b] = obs.rgb.pixel(*x, *y);
            r > 150 && g < 120 && b < 120
        })
        .count();
    assert!(
        red * 10 >= block.len() * 7,
        "{red} of {} block pixels are red",
        block.len()
    );
}

#[test]
fn nothing_leaves_the_table_under_random_actions() {
    let mut w = world(32);
    for task in task_names(w.as_ref()) {
        for seed in 0..4u64 {
            w.reset(&task, 0, seed).expect("reset");
            let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            let mut rand = move || {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
            };
            for _ in 0..200 {
                let out = w
                    .step(Action::new(rand(), rand(), rand(), rand()))
                    .expect("step");
                for o in &out.observation.objects {
                    assert!(
                        o.x.abs() <= 1.0 && o.y.abs() <= 1.0,
                        "{task}: {} left the table: {o:?}",
                        o.name
                    );
                }
                let g = &out.observation.gripper;
                assert!(
                    g.x.abs() <= 1.0 && g.y.abs() <= 1.0,
                    "{task}: gripper left the table"
                );
                if out.done {
                    break;
                }
            }
        }
    }
}

#[test]
fn a_block_pushed_into_a_wall_stays_on_the_table() {
    let mut w = world(32);
    let obs = w.reset("push", 0, 0).expect("reset");
    let block = obs.object("block").expect("block").clone();
    let (tx, ty) = (block.x - 0.25, block.y);
    let mut g = obs.gripper.clone();
    for _ in 0..60 {
        let a = Action::new((tx - g.x) / 0.045, (ty - g.y) / 0.045, 1.0, -1.0);
        g = w.step(a).expect("travel").observation.gripper;
    }
    for _ in 0..5 {
        w.step(Action::new(0.0, 0.0, -1.0, -1.0)).expect("lower");
    }
    let mut max_x = f32::MIN;
    for _ in 0..140 {
        let out = w.step(Action::new(1.0, 0.0, 0.0, -1.0)).expect("push");
        let b = out.observation.object("block").expect("block");
        max_x = max_x.max(b.x);
        assert!(
            b.x <= 1.0 - 0.069,
            "the block went into the wall: x = {}",
            b.x
        );
    }
    assert!(
        max_x > 0.8,
        "the block was pushed to the wall (max x {max_x})"
    );
}

#[test]
fn success_checks_reject_idle_episodes_and_accept_expert_ones() {
    let mut w = world(32);
    for task in task_names(w.as_ref()) {
        w.reset(&task, 1, 11).expect("reset");
        let max = w
            .tasks()
            .into_iter()
            .find(|t| t.name == task)
            .expect("task")
            .max_steps;
        let mut last = None;
        for _ in 0..max {
            let out = w.step(Action::default()).expect("step");
            assert!(!out.success, "{task}: doing nothing must not succeed");
            if out.done {
                last = Some(out);
                break;
            }
        }
        assert!(
            last.is_some(),
            "{task}: the step limit must end the episode"
        );
        let demo = record_expert(w.as_mut(), &task, 1, 11).expect("expert");
        assert!(demo.success, "{task}: the expert episode must be accepted");
    }
}

#[test]
fn bad_input_is_rejected_with_what_is_valid() {
    let err = open_world("mujoco", 64).err().expect("unknown world");
    assert!(err.to_string().contains("valid: tabletop"), "{err}");
    assert!(matches!(
        open_world("tabletop", 0),
        Err(WorldError::BadSize { .. })
    ));
    assert!(matches!(
        open_world("tabletop", 100_000),
        Err(WorldError::BadSize { .. })
    ));
    let mut w = world(32);
    assert!(matches!(
        w.step(Action::default()),
        Err(WorldError::NotReset)
    ));
    let err = w.reset("fly", 0, 0).expect_err("unknown task");
    assert!(err.to_string().contains("button-press"), "{err}");
    assert!(matches!(
        w.reset("push", 3, 0),
        Err(WorldError::UnknownView { .. })
    ));
    let views = w.views();
    assert_eq!(
        videoagent::env::resolve_view(&views, "corner2").expect("by name"),
        1
    );
    assert_eq!(
        videoagent::env::resolve_view(&views, "2").expect("by index"),
        2
    );
    assert!(videoagent::env::resolve_view(&views, "top").is_err());
}
