//! The studio driven headless with egui_kittest: clicks by accessible label and key presses,
//! assertions on the resulting state.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use egui::{Key, Modifiers};
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use videoagent::app::command::{Command, JobCommand};
use videoagent::app::jobs::{CriticChoice, VlmEndpoint};
use videoagent::app::state::{PlanView, Preference, StatusFilter, Tag, Verdict};
use videoagent::app::{GenerateSettings, StudioApp, StudioOptions};
use videoagent::env::Rgb8Image;
use videoagent::store::plan_record::{PlanRecord, SamplerRecord, write_plan};

/// Writes `n` small plan folders (distinct tasks and seeds) into `dir`.
fn sample_plans(dir: &Path, n: u64) {
    for i in 0..n {
        let frame = |v: u8| Rgb8Image {
            width: 8,
            height: 8,
            pixels: vec![v; 8 * 8 * 3],
        };
        let task = if i % 2 == 0 { "push" } else { "door-open" };
        let record = PlanRecord {
            world: "tabletop".into(),
            task: task.into(),
            view: 0,
            instruction: format!("do {task}"),
            env_seed: i,
            sample_seed: i,
            model: "test".into(),
            device: "CPU".into(),
            sampler: SamplerRecord {
                kind: "ddim".into(),
                steps: 10,
                guidance: 0.0,
                precision: videoagent::model::precision::Precision::F32,
            },
            load_ms: 0.0,
            sample_ms: 1.0,
            frames: (0..8).map(|f| format!("frames/{f:02}.png")).collect(),
            refinement: None,
        };
        let plan: Vec<Rgb8Image> = (1..8).map(|f| frame(f * 30)).collect();
        write_plan(&dir.join(format!("plan-{i}")), &record, &frame(0), &plan).expect("plan");
    }
}

/// A studio without a store, its sample plans read.
fn studio(plans: Option<&Path>) -> StudioApp {
    let mut app = StudioApp::new(options(plans, None));
    app.flush_samples();
    app
}

/// The shipped model on the CPU, annotator `tester`.
fn options(samples: Option<&Path>, store: Option<PathBuf>) -> StudioOptions {
    StudioOptions {
        model_dir: videoagent::model::pipeline::default_model_dir(),
        device: "cpu".into(),
        sample_plans: samples.map(Path::to_owned),
        store_dir: store,
        annotator: "tester".into(),
        local_critic: None,
    }
}

/// A studio on a store in `store` (samples imported), its model loaded and the store open.
fn studio_with_store(samples: &Path, store: &Path) -> StudioApp {
    let mut app = StudioApp::new(options(Some(samples), Some(store.join("store"))));
    app.wait_for_model().expect("model");
    app.flush_store().expect("the store opens");
    app
}

fn harness(app: StudioApp) -> Harness<'static, StudioApp> {
    Harness::builder()
        .with_size(egui::vec2(1400.0, 900.0))
        .build_ui_state(|ui, app: &mut StudioApp| app.show(ui), app)
}

fn verdict_of(h: &Harness<StudioApp>, plan: usize) -> Option<Verdict> {
    let studio = &h.state().studio;
    let id = studio.plans[plan].id;
    studio.labels.get(&id).and_then(|l| l.verdict)
}

#[test]
fn an_annotator_labels_plans_with_the_keyboard_and_undoes() {
    let dir = tempfile::tempdir().expect("tempdir");
    sample_plans(dir.path(), 3);
    let mut h = harness(studio(Some(dir.path())));
    h.run_steps(2);
    assert_eq!(
        h.state().studio.plans.len(),
        3,
        "the sample plans open at start"
    );

    h.key_press(Key::A);
    h.run_steps(2);
    assert_eq!(verdict_of(&h, 0), Some(Verdict::Accept));
    assert_eq!(
        h.state().studio.selected,
        Some(h.state().studio.plans[1].id),
        "advances to the next unlabeled plan"
    );
    h.key_press(Key::Num4);
    h.key_press(Key::R);
    h.run_steps(2);
    assert_eq!(verdict_of(&h, 1), Some(Verdict::Reject));
    let rating = h.state().studio.labels[&h.state().studio.plans[1].id].rating;
    assert_eq!(rating, Some(4));

    h.key_press_modifiers(Modifiers::COMMAND, Key::Z);
    h.run_steps(2);
    assert_eq!(verdict_of(&h, 1), None, "Ctrl+Z takes the reject back");
    assert_eq!(
        h.state().studio.selected,
        Some(h.state().studio.plans[1].id)
    );
    h.key_press_modifiers(Modifiers::COMMAND.plus(Modifiers::SHIFT), Key::Z);
    h.run_steps(2);
    assert_eq!(
        verdict_of(&h, 1),
        Some(Verdict::Reject),
        "and redo brings it back"
    );
    assert!(h.state().studio.audit.len() >= 5);
}

#[test]
fn buttons_tag_rate_and_filter_the_curated_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    sample_plans(dir.path(), 4);
    let mut h = harness(studio(Some(dir.path())));
    h.run_steps(2);
    h.state_mut().studio.auto_advance = false;
    h.get_by_label("teleport").click();
    h.run_steps(1);
    h.get_by_label("5").click();
    h.run_steps(1);
    h.get_by_label("Accept (A)").click();
    h.run_steps(2);
    let first = h.state().studio.plans[0].id;
    let label = h.state().studio.labels[&first].clone();
    assert!(label.tags.contains(&Tag::Teleport));
    assert_eq!(label.rating, Some(5));
    assert_eq!(label.verdict, Some(Verdict::Accept));
    assert_eq!(label.annotator, "tester");
    assert_eq!(h.state().studio.curated().len(), 1);
    h.get_by_label_contains("1 curated");

    let mut filter = h.state().studio.filter.clone();
    filter.status = StatusFilter::Unlabeled;
    h.state_mut().apply(Command::SetFilter(filter));
    h.run_steps(2);
    assert_eq!(h.state().studio.visible_plans().len(), 3);
    assert!(
        h.query_by_label_contains("[A] push  view 0  #0").is_none(),
        "the accepted plan left the unlabeled list"
    );
    h.get_by_label_contains("[ ] door-open  view 0  #1");
}

#[test]
fn playback_keys_move_every_row_together() {
    let dir = tempfile::tempdir().expect("tempdir");
    sample_plans(dir.path(), 1);
    let mut h = harness(studio(Some(dir.path())));
    h.run_steps(2);
    h.key_press(Key::End);
    h.run_steps(1);
    assert_eq!(h.state().studio.playback.frame_idx, 7);
    h.key_press(Key::ArrowLeft);
    h.run_steps(1);
    assert_eq!(h.state().studio.playback.frame_idx, 6);
    h.key_press(Key::Home);
    h.run_steps(1);
    assert_eq!(h.state().studio.playback.frame_idx, 0);
    h.key_press(Key::Space);
    h.run_steps(1);
    assert!(h.state().studio.playback.playing);
}

/// Steps the UI until `done` holds (the work runs on worker threads) or the time is up.
fn step_until(h: &mut Harness<StudioApp>, limit: Duration, done: impl Fn(&StudioApp) -> bool) {
    let start = Instant::now();
    while !done(h.state()) {
        assert!(start.elapsed() < limit, "timed out");
        h.step();
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The studio with its model loaded, 2-step plans and `configure`'s other settings, drawn once.
fn quick_studio(configure: impl FnOnce(&mut GenerateSettings)) -> Harness<'static, StudioApp> {
    let mut app = studio(None);
    app.wait_for_model().expect("model");
    app.settings.sampler_steps = 2;
    configure(&mut app.settings);
    let mut h = harness(app);
    h.run_steps(1);
    h
}

/// Clicks Generate and waits up to `limit` for the plan it makes (with its iterations).
fn generate_plan(h: &mut Harness<StudioApp>, limit: Duration) -> PlanView {
    h.get_by_label("Generate").click();
    h.run_steps(1);
    step_until(h, limit, |a| !a.is_generating());
    h.state().studio.selected_plan().expect("the plan").clone()
}

#[test]
fn generate_runs_in_the_background_and_can_be_cancelled() {
    let dir = tempfile::tempdir().expect("tempdir");
    sample_plans(dir.path(), 1);
    let mut app = studio(Some(dir.path()));
    app.wait_for_model().expect("the shipped model loads");
    app.settings.sampler_steps = 4;
    app.settings.task = "door-open".into();
    let mut h = harness(app);
    h.run_steps(1);
    let sample = h.state().studio.plans[0].id;
    h.get_by_label("Generate").click();
    h.run_steps(1);
    assert!(
        h.state().is_generating(),
        "the UI returns while the plan samples"
    );
    step_until(&mut h, Duration::from_secs(120), |a| {
        a.generate_progress().and_then(|p| p.plan).is_some()
    });
    let new = h
        .state()
        .generate_progress()
        .and_then(|p| p.plan)
        .expect("started");
    h.state_mut().apply(Command::SelectPlan(sample));
    step_until(&mut h, Duration::from_secs(120), |a| !a.is_generating());
    assert_eq!(
        h.state().studio.plan(sample).map(|p| p.iterations.len()),
        Some(1),
        "the plan the user looked at meanwhile is untouched"
    );
    h.state_mut().apply(Command::SelectPlan(new));
    let plan = h
        .state()
        .studio
        .selected_plan()
        .expect("a new plan")
        .clone();
    assert_eq!(plan.origin.task, "door-open");
    assert!(
        (1..=3).contains(&plan.iterations.len()),
        "1 plan + up to 2 refinements"
    );
    assert_eq!(
        plan.iterations[0].frames.len(),
        8,
        "start frame + 7 generated"
    );

    h.state_mut().settings.sampler_steps = 50;
    h.get_by_label("Generate").click();
    h.run_steps(1);
    h.key_press(Key::Escape);
    step_until(&mut h, Duration::from_secs(120), |a| !a.is_generating());
    let cancelled = h.state().studio.selected_plan().expect("started plan");
    assert!(
        cancelled.iterations.is_empty(),
        "cancelled before a plan was done"
    );
    assert!(
        h.state()
            .toasts
            .iter()
            .any(|t| t.text.contains("cancelled")),
        "the user is told"
    );
}

/// A VLM critic whose server is down: the plan is still made, and the iteration says why it
/// was not judged; a VLM with no server at all is refused before sampling.
#[test]
fn a_critic_that_is_down_is_reported_and_the_plan_is_kept() {
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut h = quick_studio(|s| {
        s.critic = CriticChoice::Vlm;
        s.vlm = VlmEndpoint {
            base_url: format!("http://127.0.0.1:{closed_port}/v1"),
            model: "tiny".into(),
        };
    });
    h.get_by_label("VLM server");
    let plan = generate_plan(&mut h, Duration::from_secs(120));
    assert_eq!(plan.iterations.len(), 1, "no refinement without a verdict");
    let critique = plan.iterations[0].critique.clone().expect("a critique row");
    assert_eq!(critique.accepted, None, "not judged");
    assert!(!critique.feedback.is_empty(), "says why: {critique:?}");
    h.run_steps(1);
    h.get_by_label_contains(&critique.feedback);

    h.state_mut().settings.vlm.base_url = "localhost-without-scheme".into();
    h.get_by_label("Generate").click();
    h.run_steps(1);
    step_until(&mut h, Duration::from_secs(60), |a| !a.is_generating());
    assert!(
        h.state()
            .toasts
            .iter()
            .any(|t| t.is_error && t.text.contains("VLM critic is not set up")),
        "{:?}",
        h.state().toasts
    );
}

/// The perception critic rejects only on the kinds of finding the user leaves checked: with
/// none checked it accepts the first plan, so no refinement runs.
#[test]
fn the_perception_critic_rejects_only_on_the_checked_kinds() {
    use videoagent::critic::FindingKind;
    let mut h = quick_studio(|s| s.max_refinements = 2);
    h.get_by_label("every kind of finding").click();
    h.run_steps(1);
    for kind in FindingKind::ALL {
        h.get_by_role_and_label(egui::accesskit::Role::CheckBox, &kind.label())
            .click();
        h.run_steps(1);
    }
    assert!(h.state().settings.rejects_on.is_empty(), "all unchecked");
    h.run_steps(1);
    h.get_by_label("nothing (accepts every plan)");
    let plan = generate_plan(&mut h, Duration::from_secs(120));
    assert_eq!(plan.iterations.len(), 1, "accepted at once: no refinement");
    let critique = plan.iterations[0].critique.clone().expect("a critique");
    assert_eq!(critique.accepted, Some(true), "{critique:?}");

    h.get_by_role_and_label(egui::accesskit::Role::CheckBox, "goal not reached")
        .click();
    h.run_steps(1);
    assert_eq!(
        h.state().settings.rejects_on,
        vec![FindingKind::GoalNotReached],
        "checking a kind again makes it a reason to reject"
    );
}

/// "Only the task object's glitches" makes the perception critic the task-object one: the
/// setting changes and the plan's critique names that critic.
#[test]
fn the_task_object_scope_is_one_click_away() {
    use videoagent::critic::FindingScope;
    let mut h = quick_studio(|s| s.max_refinements = 0);
    h.get_by_role_and_label(
        egui::accesskit::Role::CheckBox,
        "only the task object's glitches",
    )
    .click();
    h.run_steps(1);
    assert_eq!(h.state().settings.scope, FindingScope::TaskObject);
    let plan = generate_plan(&mut h, Duration::from_secs(120));
    let critique = plan.iterations[0].critique.clone().expect("a critique");
    assert_eq!(critique.critic, "perception-task");
}

/// The execution critic (the paper's environment feedback) judges each plan by running it in a
/// copy of the world: refinement goes on until one works, and executing the chosen plan in the
/// studio agrees with its verdict.
#[test]
fn the_execution_critic_agrees_with_executing_the_plan() {
    let mut h = quick_studio(|s| {
        s.max_refinements = 1;
        s.critic = CriticChoice::Execution;
    });
    let plan = generate_plan(&mut h, Duration::from_secs(120));
    let verdicts: Vec<Option<bool>> = plan
        .iterations
        .iter()
        .map(|i| i.critique.as_ref().and_then(|c| c.accepted))
        .collect();
    let accepted = verdicts.last() == Some(&Some(true));
    assert!(
        accepted || verdicts == [Some(false), Some(false)],
        "{verdicts:?}"
    );
    for rejected in &plan.iterations[..plan.iterations.len() - 1] {
        let c = rejected.critique.as_ref().expect("a critique");
        assert!(
            c.feedback.starts_with("Executing this plan failed"),
            "{c:?}"
        );
    }
    h.get_by_label("Execute").click();
    h.run_steps(1);
    step_until(&mut h, Duration::from_secs(120), |a| !a.is_executing());
    let rollout = h
        .state()
        .studio
        .selected_plan()
        .and_then(|p| p.rollout.clone())
        .expect("rollout shown");
    assert_eq!(rollout.success, accepted, "the critic ran the same plan");
}

#[test]
fn a_broken_model_folder_is_reported_in_the_ui() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut app = StudioApp::new(StudioOptions {
        model_dir: dir.path().to_owned(),
        ..options(None, None)
    });
    assert!(app.wait_for_model().is_err());
    let mut h = harness(app);
    h.run_steps(2);
    h.get_by_label_contains("no model:");
    h.get_by_label("Generate").click();
    h.run_steps(2);
    assert!(!h.state().is_generating());
    assert!(h.state().toasts.iter().any(|t| t.is_error));
}

#[test]
fn labels_and_plans_survive_a_restart_through_the_store() {
    let samples = tempfile::tempdir().expect("tempdir");
    sample_plans(samples.path(), 3);
    let store = tempfile::tempdir().expect("tempdir");
    let open = || harness(studio_with_store(samples.path(), store.path()));
    let mut h = open();
    h.run_steps(2);
    assert_eq!(
        h.state().studio.plans.len(),
        3,
        "samples imported into the empty store"
    );
    h.key_press(Key::Num2);
    h.run_steps(1);
    h.get_by_label("B is better").click();
    h.key_press(Key::R);
    h.run_steps(2);
    h.state_mut().flush_store().expect("saved");
    let first = h.state().studio.plans[0].id;
    drop(h);

    let mut h = open();
    h.run_steps(2);
    assert_eq!(
        h.state().studio.plans.len(),
        3,
        "samples are not imported twice"
    );
    let label = h
        .state()
        .studio
        .labels
        .get(&first)
        .cloned()
        .expect("label kept");
    assert_eq!(label.verdict, Some(Verdict::Reject));
    assert_eq!(label.rating, Some(2));
    assert_eq!(
        label.preference,
        Some((0, 1, Preference::BBetter)),
        "the A/B preference is stored too"
    );
    assert!(
        h.query_by_label_contains("labels not saved").is_none(),
        "the status bar reports a working store"
    );
}

#[test]
fn execute_runs_the_chosen_iteration_and_shows_the_rollout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut world = videoagent::env::open_world("tabletop", 64).expect("world");
    let plan = videoagent::agent::execute::expert_plan(world.as_mut(), "button-press", 0, 4, 32)
        .expect("expert plan");
    let record = PlanRecord {
        world: "tabletop".into(),
        task: "button-press".into(),
        view: 0,
        instruction: "press the button".into(),
        env_seed: 4,
        sample_seed: 4,
        model: "expert".into(),
        device: "none".into(),
        sampler: SamplerRecord {
            kind: "expert".into(),
            steps: 0,
            guidance: 0.0,
            precision: videoagent::model::precision::Precision::F32,
        },
        load_ms: 0.0,
        sample_ms: 0.0,
        frames: (0..plan.len())
            .map(|f| format!("frames/{f:02}.png"))
            .collect(),
        refinement: None,
    };
    write_plan(&dir.path().join("expert"), &record, &plan[0], &plan[1..]).expect("plan");
    let mut h = harness(studio(Some(dir.path())));
    h.run_steps(2);
    h.get_by_label("Execute").click();
    h.run_steps(1);
    assert!(h.state().is_executing(), "execution runs in the background");
    step_until(&mut h, Duration::from_secs(120), |a| !a.is_executing());
    let rollout = h.state().studio.plans[0]
        .rollout
        .clone()
        .expect("rollout shown");
    assert!(
        rollout.success,
        "the expert's own video, executed, presses the button"
    );
    assert!(rollout.frames.len() > 8);
    h.get_by_label_contains("success in");
}

#[test]
fn fine_tune_on_the_curated_set_plots_the_loss_and_can_switch_models() {
    let dir = tempfile::tempdir().expect("tempdir");
    sample_plans(dir.path(), 2);
    let store = tempfile::tempdir().expect("tempdir");
    let mut app = studio_with_store(dir.path(), store.path());
    app.finetune_steps = 2;
    app.settings.sampler_steps = 2;
    let mut h = harness(app);
    h.run_steps(2);
    h.key_press(Key::A);
    h.run_steps(2);
    h.get_by_label("Fine-tune on curated set").click();
    h.run_steps(1);
    assert!(h.state().is_finetuning(), "training runs in the background");
    step_until(&mut h, Duration::from_secs(300), |a| !a.is_finetuning());
    let status = h.state().finetune_status.clone();
    assert_eq!(status.losses.len(), 2, "one loss point per step");
    let model_dir = status.result.clone().expect("a fine-tuned model to choose");
    assert!(model_dir.join("model.safetensors").is_file());
    // Old and new model plan the same held-out start of the curated task, side by side.
    h.run_steps(1);
    assert!(h.state().comparison.open, "the comparison opens by itself");
    step_until(&mut h, Duration::from_secs(120), |a| !a.is_comparing());
    let compared = &h.state().comparison.starts;
    assert_eq!(compared.len(), 1, "one curated task, one held-out start");
    assert_eq!(compared[0].before.score.seed, compared[0].after.score.seed);
    assert_eq!(compared[0].before.plan.len(), 7);
    h.get_by_label("PSNR to the expert (dB)");
    h.check_accessibility();
    h.get_by_label("Keep the new model").click();
    h.run_steps(1);
    h.state_mut()
        .wait_for_model()
        .expect("the fine-tuned model loads");
    h.run_steps(1);
    h.get_by_label_contains(&format!(
        "model {}",
        model_dir.file_name().expect("name").to_string_lossy()
    ));

    // Exports run in the background: the chosen iteration as a GIF (Ctrl+S), then every
    // iteration as a PNG strip from the menu.
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::S);
    h.run_steps(1);
    step_until(&mut h, Duration::from_secs(30), |app| !app.is_exporting());
    h.get_by_label("Export").click();
    h.run_steps(2);
    assert!(
        h.query_by_label("Chosen iteration as MP4").is_some(),
        "the export menu is open"
    );
    h.get_by_label("All iterations as PNG strip").click();
    h.run_steps(1);
    step_until(&mut h, Duration::from_secs(30), |app| !app.is_exporting());
    let exports = store.path().join("store").join("exports");
    let mut files: Vec<_> = std::fs::read_dir(&exports)
        .expect("exports folder")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "a GIF and a PNG strip: {files:?}");
    let gif = files
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "gif"));
    let bytes = std::fs::read(gif.expect("gif")).expect("gif");
    assert!(bytes.starts_with(b"GIF89a"));
    let strip = files
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "png"));
    let strip = image::open(strip.expect("png strip"))
        .expect("png")
        .to_rgb8();
    let plan = h.state().studio.selected_plan().expect("plan");
    let (rows, cols) = (plan.iterations.len() as u32, plan.frame_count() as u32);
    let side = plan.iterations[0].frames[0].width;
    assert_eq!(
        (strip.width(), strip.height()),
        ((cols * (side + 1) + 1) * 4, (rows * (side + 1) + 1) * 4),
        "one row per iteration, one column per frame, upscaled 4x"
    );
}

/// Screen readers (and these tests) find every widget by name: the browser's form and filters,
/// frame thumbnails, the compare view in each mode, the inspector.
#[test]
fn every_widget_has_an_accessible_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    sample_plans(dir.path(), 2);
    let mut h = harness(studio(Some(dir.path())));
    h.run_steps(3);
    h.check_accessibility();
    h.get_by_label("iteration 0 frame 3").click();
    h.run_steps(1);
    assert_eq!(
        h.state().studio.playback.frame_idx,
        3,
        "a thumbnail seeks its frame"
    );
    for mode in ["Wipe", "Onion skin", "Difference"] {
        h.get_by_label(mode).click();
        h.run_steps(2);
        h.check_accessibility();
    }
}

/// Stop (Esc) ends a long fine-tune early; what was trained so far is saved and offered.
#[test]
fn a_fine_tune_can_be_cancelled() {
    let dir = tempfile::tempdir().expect("tempdir");
    sample_plans(dir.path(), 1);
    let store = tempfile::tempdir().expect("tempdir");
    let mut app = studio_with_store(dir.path(), store.path());
    app.finetune_steps = 100_000;
    let mut h = harness(app);
    h.run_steps(2);
    h.key_press(Key::A);
    h.run_steps(1);
    h.state_mut().apply(Command::Job(JobCommand::FineTune));
    step_until(&mut h, Duration::from_secs(120), |a| {
        a.finetune_status.step >= 1
    });
    h.key_press(Key::Escape);
    step_until(&mut h, Duration::from_secs(120), |a| !a.is_finetuning());
    let status = h.state().finetune_status.clone();
    assert!(
        status.step < 100_000,
        "stopped early at step {}",
        status.step
    );
    assert!(
        h.state()
            .toasts
            .iter()
            .any(|t| t.text.contains("stopped (saved)")),
        "{:?}",
        h.state().toasts
    );
    let saved = status.result.expect("the partial model is offered");
    assert!(saved.join("model.safetensors").is_file());
}

#[test]
fn demo_mode_hides_the_side_panels_and_plays() {
    let dir = tempfile::tempdir().expect("tempdir");
    sample_plans(dir.path(), 2);
    let mut h = harness(studio(Some(dir.path())));
    h.run_steps(2);
    assert!(
        h.query_by_label("Label").is_some(),
        "the inspector is shown"
    );
    h.key_press(Key::F11);
    h.run_steps(2);
    assert!(h.state().studio.demo);
    assert!(h.state().studio.playback.playing, "demo mode plays");
    assert!(
        h.query_by_label("Label").is_none(),
        "the inspector is hidden"
    );
    assert!(
        h.query_by_label("Make a plan").is_none(),
        "the browser is hidden"
    );
    h.get_by_label("Leave demo").click();
    h.run_steps(2);
    assert!(!h.state().studio.demo);
}

#[test]
fn a_plan_from_an_opened_image_and_bad_images_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut world = videoagent::env::open_world("tabletop", 96).expect("world");
    let first = world.reset("push", 1, 9).expect("reset").rgb;
    let png = dir.path().join("start.png");
    first.to_image().save(&png).expect("png");
    let junk = dir.path().join("junk.png");
    std::fs::write(&junk, b"not an image").expect("junk");

    let mut app = studio(None);
    app.wait_for_model().expect("model");
    app.open_first_frame(&junk);
    assert!(app.settings.image.is_none());
    assert!(
        app.toasts
            .iter()
            .any(|t| t.is_error && t.text.contains("junk.png"))
    );
    app.open_first_frame(&png);
    assert_eq!(app.settings.image.as_ref().map(|(_, f)| f.width), Some(64));
    app.settings.sampler_steps = 3;
    let mut h = harness(app);
    h.run_steps(1);
    h.get_by_label("Generate").click();
    h.run_steps(1);
    step_until(&mut h, Duration::from_secs(120), |a| !a.is_generating());
    assert!(
        h.state()
            .toasts
            .iter()
            .any(|t| t.is_error && t.text.contains("type an instruction")),
        "an empty instruction is refused with a message"
    );
    h.state_mut().settings.instruction = "push the block to the left".into();
    h.get_by_label("Generate").click();
    h.run_steps(1);
    step_until(&mut h, Duration::from_secs(120), |a| !a.is_generating());
    let toasts: Vec<String> = h.state().toasts.iter().map(|t| t.text.clone()).collect();
    let plan = h
        .state()
        .studio
        .selected_plan()
        .unwrap_or_else(|| panic!("no plan; toasts: {toasts:?}"))
        .clone();
    assert_eq!(plan.origin.world, "image");
    assert_eq!(plan.origin.task, "start.png");
    assert!(!plan.iterations.is_empty());
    assert_eq!(plan.iterations[0].frames.len(), 8);
}

/// A device that cannot be opened (no CUDA in this build or no GPU) is reported and the model
/// that works stays in use; a store that cannot be written keeps labels in memory, visibly.
#[test]
fn an_unavailable_device_and_an_unwritable_store_are_reported_and_work_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    sample_plans(dir.path(), 2);
    // Not even root can create folders under /proc.
    let store = Some("/proc/videoagent-store".into());
    let mut app = StudioApp::new(options(Some(dir.path()), store));
    app.wait_for_model().expect("model");
    assert!(app.flush_store().is_err(), "the store cannot open");
    app.flush_samples();
    let mut h = harness(app);
    h.run_steps(2);
    h.get_by_label_contains("labels not saved");
    h.key_press(Key::A);
    h.run_steps(1);
    assert_eq!(
        verdict_of(&h, 0),
        Some(Verdict::Accept),
        "labelling goes on"
    );

    let before = h.state().model_status();
    h.state_mut()
        .apply(Command::Job(JobCommand::SwitchDevice("metal".into())));
    h.state_mut()
        .wait_for_model()
        .expect("the working model stays");
    h.run_steps(2);
    assert_eq!(h.state().model_status(), before, "still the CPU model");
    assert_eq!(
        h.state().device(),
        "cpu",
        "the picker shows the device in use"
    );
    assert!(
        h.state()
            .toasts
            .iter()
            .any(|t| t.is_error && t.text.contains("the current model stays")),
        "{:?}",
        h.state().toasts
    );
}

/// The world picker offers MetaWorld; picking it lists its tasks and cameras. Without its venv
/// (as in CI) a generation says how to set it up; with it, the model plans from its first
/// frame.
#[test]
fn metaworld_can_be_picked_and_planned_from_or_says_how_to_set_it_up() {
    let mut app = studio(None);
    app.wait_for_model().expect("model");
    app.settings.sampler_steps = 2;
    app.settings.critic = CriticChoice::None;
    let mut h = harness(app);
    h.run_steps(1);
    h.get_by_label("World");
    h.state_mut().select_world("metaworld");
    h.run_steps(2);
    let app = h.state();
    assert_eq!(app.settings.world, "metaworld");
    assert!(app.tasks().iter().any(|t| t.name == "basketball"));
    assert!(app.views().iter().any(|v| v.name == "corner2"));
    assert!(
        app.tasks().iter().any(|t| t.name == app.settings.task),
        "the task is one of MetaWorld's"
    );
    let setup_needed = app
        .worlds()
        .iter()
        .find(|w| w.name == "metaworld")
        .and_then(|w| w.setup_needed.clone());
    h.get_by_label("Generate").click();
    h.run_steps(1);
    step_until(&mut h, Duration::from_secs(180), |a| !a.is_generating());
    match setup_needed {
        Some(_) => assert!(
            h.state()
                .toasts
                .iter()
                .any(|t| t.is_error && t.text.contains("videoagent setup metaworld")),
            "{:?}",
            h.state().toasts
        ),
        None => {
            let plan = h.state().studio.selected_plan().expect("a MetaWorld plan");
            assert_eq!(plan.origin.world, "metaworld");
            assert_eq!(plan.iterations[0].frames.len(), 8);
        }
    }
    h.state_mut().select_world("tabletop");
    assert!(h.state().tasks().iter().any(|t| t.name == "push"));
}

/// Renders `h` with wgpu (lavapipe in CI) and checks the picture shows something; with
/// `VIDEOAGENT_SCREENSHOTS=DIR` it is also written to `DIR/name.png` (the README's pictures).
fn screenshot(h: &mut Harness<StudioApp>, name: &str) {
    let image = h.render().expect("the studio renders with wgpu");
    assert_eq!((image.width(), image.height()), (1400, 900), "{name}");
    let first = *image.get_pixel(0, 0);
    let differing = image.pixels().filter(|p| **p != first).count();
    assert!(
        differing > image.len() / 40,
        "{name}: the picture is nearly uniform ({differing} pixels differ)"
    );
    if let Some(dir) = std::env::var_os("VIDEOAGENT_SCREENSHOTS") {
        let path = Path::new(&dir).join(format!("{name}.png"));
        image.save(&path).expect("write the screenshot");
    }
}

/// The README's pictures, from the shipped sample plans: iterations with their critiques, the
/// compare view, the labelling flow, and a fine-tune with its loss plot and the old-vs-new
/// comparison.
#[test]
fn screenshots_of_the_main_views() {
    let store = tempfile::tempdir().expect("tempdir");
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample_data/plans");
    let mut app = StudioApp::new(StudioOptions {
        annotator: "ana".into(),
        ..options(Some(&samples), Some(store.path().join("store")))
    });
    app.wait_for_model().expect("model");
    app.flush_store().expect("store");
    app.finetune_steps = 12;
    app.settings.sampler_steps = 4;
    app.studio.auto_advance = false;
    let mut h = Harness::builder()
        .with_size(egui::vec2(1400.0, 900.0))
        .wgpu()
        .build_ui_state(|ui, app: &mut StudioApp| app.show(ui), app);
    h.run_steps(3);
    let refined = h
        .state()
        .studio
        .plans
        .iter()
        .find(|p| p.origin.task == "push")
        .map(|p| p.id)
        .expect("the push sample plan");
    h.state_mut().apply(Command::SelectPlan(refined));
    h.state_mut().apply(Command::SeekFrame(5));
    h.run_steps(3);
    screenshot(&mut h, "studio");

    h.get_by_label("Wipe").click();
    h.run_steps(3);
    screenshot(&mut h, "studio-compare");

    h.get_by_label("Difference").click();
    h.get_by_label("teleport").click();
    h.key_press(Key::Num4);
    h.key_press(Key::A);
    h.run_steps(3);
    assert_eq!(
        h.state().studio.curated().len(),
        1,
        "{:?}",
        h.state().studio.selected_label()
    );
    screenshot(&mut h, "studio-labels");

    h.state_mut().apply(Command::Job(JobCommand::FineTune));
    step_until(&mut h, Duration::from_secs(300), |a| !a.is_finetuning());
    step_until(&mut h, Duration::from_secs(300), |a| !a.is_comparing());
    h.run_steps(3);
    assert_eq!(
        h.state().finetune_status.losses.len(),
        12,
        "{:?}",
        h.state().toasts
    );
    screenshot(&mut h, "studio-finetune");
}
