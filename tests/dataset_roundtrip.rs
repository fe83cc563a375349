//! `videoagent dataset` writes what the loader reads back, atomically, and refuses to
//! overwrite other data.

use std::sync::atomic::AtomicBool;

use videoagent::env::{demo::record_expert, open_world};
use videoagent::store::collect::{CollectSpec, collect};
use videoagent::store::dataset::{Dataset, clip_indices};

fn spec() -> CollectSpec {
    CollectSpec {
        world: "tabletop".into(),
        frame_size: 32,
        tasks: vec!["push".into(), "door-open".into()],
        views: vec![0, 2],
        episodes: 2,
        candidates: 2,
        seed_base: 100,
        threads: 2,
    }
}

#[test]
fn dataset_round_trips_frames_actions_and_clips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("data");
    let spec = spec();
    let manifest = collect(&spec, &out, &|| {}, &AtomicBool::new(false)).expect("collect");
    assert_eq!(manifest.episodes.len(), 8);
    let ds = Dataset::open(&out).expect("open");
    let mut world = open_world("tabletop", 32).expect("world");
    for (i, ep) in ds.episodes().iter().enumerate() {
        assert!(ep.success);
        assert_eq!(ep.seed, spec.seed((ep.seed - 100) as usize / 3, ep.view));
        let demo = record_expert(world.as_mut(), &ep.task, ep.view, ep.seed).expect("replay");
        assert_eq!(ep.frames, demo.frames.len());
        let last = ep.frames - 1;
        assert_eq!(
            ds.frame(i, last).expect("frame"),
            demo.frames[last],
            "PNG must be lossless"
        );
        assert_eq!(ds.segmentation(i, 0).expect("seg"), demo.segmentations[0]);
        let (actions, states) = ds.trajectory(i).expect("trajectory");
        assert_eq!(actions, demo.actions);
        assert_eq!(states, demo.states);
        let clip = ds.clip(i, 3).expect("clip");
        assert_eq!(clip.frames.len(), 8);
        assert_eq!(clip.frames[7], demo.frames[last]);
        assert_eq!(clip.frames[0], demo.frames[clip_indices(ep.frames, 3)[0]]);
    }
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("data")],
        "no temporary folder may remain"
    );
}

/// The paper's protocol: try more seeds than needed, keep the shortest demonstrations.
#[test]
fn candidates_keep_the_shortest_successful_episodes_and_nothing_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let all = collect(
        &spec(),
        &dir.path().join("all"),
        &|| {},
        &AtomicBool::new(false),
    )
    .expect("collect all");
    let chosen = CollectSpec {
        episodes: 1,
        ..spec()
    };
    let out = dir.path().join("shortest");
    let manifest = collect(&chosen, &out, &|| {}, &AtomicBool::new(false)).expect("collect");
    assert_eq!(manifest.episodes.len(), 4, "one per task and view");
    for ep in &manifest.episodes {
        let shortest = all
            .episodes
            .iter()
            .filter(|e| e.task == ep.task && e.view == ep.view && e.success)
            .map(|e| (e.frames, e.seed))
            .min()
            .expect("a success");
        assert_eq!((ep.frames, ep.seed), shortest);
    }
    assert_eq!(
        episode_folders(&out),
        manifest.episodes.len(),
        "the other candidates' folders are gone"
    );
    assert_eq!(Dataset::open(&out).expect("open").episodes().len(), 4);
}

/// Episode folders (those with a `meta.json`) under `root`.
fn episode_folders(root: &std::path::Path) -> usize {
    let mut n = 0;
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        n += usize::from(dir.join("meta.json").is_file());
        let entries = std::fs::read_dir(&dir).expect("ls");
        stack.extend(
            entries
                .map(|e| e.expect("entry").path())
                .filter(|p| p.is_dir()),
        );
    }
    n
}

#[test]
fn refuses_a_non_empty_folder_and_leaves_it_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("precious.txt"), b"mine").expect("write");
    let err =
        collect(&spec(), dir.path(), &|| {}, &AtomicBool::new(false)).expect_err("must refuse");
    assert!(err.to_string().contains("not empty"), "{err}");
    assert_eq!(
        std::fs::read(dir.path().join("precious.txt")).expect("read"),
        b"mine"
    );
}

#[test]
fn a_cancelled_collection_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("data");
    let cancel = AtomicBool::new(true);
    assert!(collect(&spec(), &out, &|| {}, &cancel).is_err());
    assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 0);
}
