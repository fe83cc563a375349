//! Training resumes exactly: a run interrupted and resumed from its checkpoint follows the
//! same loss curve and ends with the same weights as an uninterrupted one. The saved model
//! folder loads back and plans deterministically.

use std::ops::ControlFlow;

use candle_core::Device;
use videoagent::env::{demo::record_expert, open_world};
use videoagent::model::train::{TrainConfig, TrainData, TrainOutcome, Trainer};
use videoagent::model::{ModelConfig, SampleConfig, UNetConfig, VideoModel};

fn tiny_model() -> ModelConfig {
    // The test tiny network at 16x16 and the shipped frame count, so real clips fit.
    let unet = UNetConfig {
        image_size: (16, 16),
        num_head_channels: 32,
        frames: UNetConfig::tabletop().frames,
        ..UNetConfig::tiny()
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

/// A kill between writing the state file of step 2 and the state JSON leaves the JSON of
/// step 1 beside the state of step 2 (a window of milliseconds that random kills rarely hit,
/// so it is made here by hand): the run resumes from the state file's step, and temporary
/// files of killed saves are removed.
#[test]
fn a_kill_between_state_file_and_state_json_still_resumes() {
    let device = Device::Cpu;
    let data = data();
    let dir = tempfile::tempdir().expect("tempdir");
    let run = dir.path().join("run");
    let mut t = Trainer::new(tiny_model(), config(1), &run, None, &device).expect("trainer");
    t.train(&data, |_| ControlFlow::Continue(()))
        .expect("train");
    let json_of_step_1 = std::fs::read(run.join("train_state.json")).expect("json");
    drop(t);
    let mut t = Trainer::resume(&run, Some(2), &device).expect("resume");
    t.train(&data, |_| ControlFlow::Continue(()))
        .expect("train");
    drop(t);
    std::fs::write(run.join("train_state.json"), json_of_step_1).expect("older json");
    std::fs::write(run.join(".tmpXy12Zw"), b"half a state file").expect("temp");
    std::fs::write(run.join(".train_state.safetensors.99.0.tmp"), b"half").expect("temp");

    let resumed = Trainer::resume(&run, None, &device).expect("resumes");
    assert_eq!(resumed.step(), 2);
    assert_eq!(resumed.loss_log().len(), 2, "the loss log keeps step 2");
    let hidden = std::fs::read_dir(&run)
        .expect("ls")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .count();
    assert_eq!(hidden, 0, "temporary files of killed saves are removed");
}

mod refinement {
    //! Refinement data made by the library from a dataset on disk, resumed; refinement
    //! training (consistency term on) resumed exactly.

    use std::ops::ControlFlow;

    use candle_core::Device;
    use videoagent::agent::refine_data::{
        RefineDataProgress, RefineDataSpec, generate_refine_data, select_starts, training_items,
    };
    use videoagent::critic::PerceptionCritic;
    use videoagent::env::{demo::record_expert, open_world};
    use videoagent::model::refine_train::RefineTrainData;
    use videoagent::model::train::{TrainConfig, Trainer};
    use videoagent::model::{SampleConfig, VideoModel};
    use videoagent::store::Dataset;
    use videoagent::store::dataset::{DatasetWriter, write_episode};
    use videoagent::store::refine_data::{RefineData, RefineDataHeader};

    fn dataset(dir: &std::path::Path) -> Dataset {
        let mut world = open_world("tabletop", 32).expect("world");
        let mut writer = DatasetWriter::create(dir, "tabletop", 32).expect("writer");
        for (task, seed) in [("push", 1), ("push", 2), ("door-open", 1)] {
            let demo = record_expert(world.as_mut(), task, 0, seed).expect("demo");
            let meta =
                write_episode(writer.root(), &demo, "front", &[task.to_owned()]).expect("episode");
            writer.register(meta);
        }
        writer.finish().expect("finish");
        Dataset::open(dir).expect("open")
    }

    #[test]
    fn refine_data_is_generated_resumed_and_trains_with_exact_resume() {
        let device = Device::Cpu;
        let tmp = tempfile::tempdir().expect("tempdir");
        let dataset = dataset(&tmp.path().join("data"));
        // The model that plans: a tiny one saved as a model folder.
        let model_dir = tmp.path().join("model");
        Trainer::new(
            super::tiny_model(),
            super::config(0),
            &model_dir,
            None,
            &device,
        )
        .expect("trainer")
        .save()
        .expect("save");
        let model = VideoModel::load(&model_dir, &device).expect("model");
        let header = || RefineDataHeader::new("tabletop", "m", 16, 2, 2, "perception", 0);
        let out_dir = tmp.path().join("refine");
        let spec = RefineDataSpec {
            generations: 2,
            sample: SampleConfig::ddim(2),
            seed: 0,
        };
        let starts = select_starts(&dataset, 2);
        assert_eq!(starts.len(), 3, "2 push starts and 1 door-open start");
        // First run: interrupted after one start.
        let out = RefineData::create_or_continue(&out_dir, header()).expect("create");
        let n = generate_refine_data(
            &model,
            &PerceptionCritic::default(),
            &dataset,
            &starts,
            &out,
            &spec,
            &mut |_| ControlFlow::Break(()),
        )
        .expect("generate");
        assert_eq!(n, 1);
        let first = out.read_all().expect("read");
        // The rerun skips it and does the rest.
        let out = RefineData::create_or_continue(&out_dir, header()).expect("continue");
        let mut skipped = 0;
        let n = generate_refine_data(
            &model,
            &PerceptionCritic::default(),
            &dataset,
            &starts,
            &out,
            &spec,
            &mut |p| {
                if let RefineDataProgress::Skipped(_) = p {
                    skipped += 1;
                }
                ControlFlow::Continue(())
            },
        )
        .expect("generate");
        assert_eq!((n, skipped), (2, 1));
        let samples = out.read_all().expect("read");
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0], first[0], "the stored start is untouched");
        for s in &samples {
            assert_eq!(s.truth.len(), 8);
            assert_eq!(s.generations.len(), 2);
            assert_eq!(s.generations[1].len(), 7);
            let g = &s.meta.generations;
            assert!(!g[0].review.feedback.is_empty());
            assert!(
                g[1].prompt.starts_with(&s.meta.instruction)
                    && g[1].prompt.len() > g[0].prompt.len(),
                "the second plan refines the first with its critique: {:?}",
                g[1].prompt
            );
        }

        // Refinement training resumes exactly, consistency term included.
        let data = RefineTrainData::new(16, training_items(&samples), None).expect("data");
        assert_eq!(data.paired(), 3);
        let cfg = TrainConfig {
            batch: 4,
            ..super::config(4)
        };
        let straight_dir = tmp.path().join("straight");
        let mut straight = Trainer::new(
            super::tiny_model(),
            cfg.clone(),
            &straight_dir,
            Some(&model_dir),
            &device,
        )
        .expect("trainer");
        straight
            .train(&data, |_| ControlFlow::Continue(()))
            .expect("train");
        let split_dir = tmp.path().join("split");
        let mut first_leg = Trainer::new(
            super::tiny_model(),
            cfg,
            &split_dir,
            Some(&model_dir),
            &device,
        )
        .expect("trainer");
        first_leg
            .train(&data, |p| {
                if p.step >= 2 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .expect("train");
        drop(first_leg);
        let mut resumed = Trainer::resume(&split_dir, None, &device).expect("resume");
        assert_eq!(resumed.config.consistency_weight, 1.0);
        resumed
            .train(&data, |_| ControlFlow::Continue(()))
            .expect("train");
        let a: Vec<f32> = straight.loss_log().iter().map(|r| r.1).collect();
        let b: Vec<f32> = resumed.loss_log().iter().map(|r| r.1).collect();
        assert_eq!(a.len(), 4);
        assert_eq!(a, b, "refinement loss curves differ after resuming");
        assert_eq!(
            straight.evaluate(&data, 99).expect("eval"),
            resumed.evaluate(&data, 99).expect("eval"),
            "resumed weights differ"
        );
    }
}
