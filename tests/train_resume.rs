//! Training resumes exactly: a run interrupted and resumed from its checkpoint follows the
//! same loss curve and ends with the same weights as an uninterrupted one. The saved model
//! folder loads back and plans deterministically.

use std::ops::ControlFlow;

use candle_core::Device;
use videoagent::env::{demo::record_expert, open_world};
use videoagent::model::train::{TrainConfig, TrainData, TrainOutcome, Trainer};
use videoagent::model::{ModelConfig, SampleConfig, UNetConfig, VideoModel};

fn tiny_model() -> ModelConfig {
    let unet = UNetConfig {
        image_size: (16, 16),
        model_channels: 32,
        num_res_blocks: 1,
        attention_resolutions: vec![2],
        channel_mult: vec![1, 1],
        num_head_channels: 32,
        task_token_channels: 8,
        ..UNetConfig::tabletop()
    };
    ModelConfig::new(unet, "tabletop")
}

fn data() -> TrainData {
    let mut world = open_world("tabletop", 32).expect("world");
    let items = ["push", "door-open"]
        .iter()
        .map(|task| {
            let demo = record_expert(world.as_mut(), task, 0, 1).expect("demo");
            (demo.frames, vec![(*task).to_owned()])
        })
        .collect();
    TrainData::from_frames(16, items)
}

fn config(steps: u64) -> TrainConfig {
    TrainConfig {
        steps,
        batch: 2,
        checkpoint_every: 1000,
        ..TrainConfig::default()
    }
}

#[test]
fn resumed_training_matches_an_uninterrupted_run() {
    let device = Device::Cpu;
    let data = data();
    let straight_dir = tempfile::tempdir().expect("tempdir");
    let mut straight =
        Trainer::new(tiny_model(), config(4), straight_dir.path(), None, &device).expect("trainer");
    assert_eq!(
        straight
            .train(&data, |_| ControlFlow::Continue(()))
            .expect("train"),
        TrainOutcome::Finished
    );

    let split_dir = tempfile::tempdir().expect("tempdir");
    let mut first =
        Trainer::new(tiny_model(), config(4), split_dir.path(), None, &device).expect("trainer");
    let outcome = first
        .train(&data, |p| {
            if p.step >= 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .expect("train");
    assert_eq!(outcome, TrainOutcome::Stopped);
    drop(first);
    let mut resumed = Trainer::resume(split_dir.path(), None, &device).expect("resume");
    assert_eq!(resumed.step(), 2);
    resumed
        .train(&data, |_| ControlFlow::Continue(()))
        .expect("train");

    let a: Vec<f32> = straight.loss_log().iter().map(|r| r.1).collect();
    let b: Vec<f32> = resumed.loss_log().iter().map(|r| r.1).collect();
    assert_eq!(a.len(), 4);
    assert_eq!(a, b, "loss curves differ after resuming");

    let sample = SampleConfig::ddim(3);
    let frame = &data_first_frame();
    let load = |dir: &std::path::Path| VideoModel::load(dir, &device).expect("load saved model");
    let pa = load(straight_dir.path())
        .plan(frame, None, "push", &sample, 5, |_| {
            ControlFlow::Continue(())
        })
        .expect("plan");
    let pb = load(split_dir.path())
        .plan(frame, None, "push", &sample, 5, |_| {
            ControlFlow::Continue(())
        })
        .expect("plan");
    assert_eq!(pa, pb, "resumed weights differ");
    let plan = pa.expect("not cancelled");
    assert_eq!(plan.len(), 7);
    assert_eq!((plan[0].width, plan[0].height), (16, 16));
}

fn data_first_frame() -> videoagent::env::Rgb8Image {
    let mut world = open_world("tabletop", 32).expect("world");
    world.reset("push", 0, 1).expect("reset").rgb
}

#[test]
fn a_corrupt_training_state_is_refused_with_its_path() {
    let device = Device::Cpu;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut t = Trainer::new(tiny_model(), config(1), dir.path(), None, &device).expect("trainer");
    t.train(&data(), |_| ControlFlow::Continue(()))
        .expect("train");
    std::fs::write(dir.path().join("train_state.safetensors"), b"garbage").expect("write");
    let err = Trainer::resume(dir.path(), None, &device)
        .err()
        .expect("must refuse");
    assert!(err.to_string().contains("train_state.safetensors"), "{err}");
    std::fs::write(dir.path().join("model.safetensors"), b"").expect("write");
    let err = VideoModel::load(dir.path(), &device)
        .err()
        .expect("must refuse");
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}
