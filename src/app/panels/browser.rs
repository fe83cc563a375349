//! Left panel: make a plan (world start, sampler and refinement settings), then the list of
//! plans with filters and the curated-set counts.

use crate::app::StudioApp;
use crate::app::command::{Command, JobCommand};
use crate::app::jobs::CriticChoice;
use crate::app::state::{AgeFilter, CriticFilter, SortOrder, StatusFilter, Tag, Verdict};
use crate::critic::{FindingKind, FindingScope};

pub fn browser(ui: &mut egui::Ui, app: &mut StudioApp, commands: &mut Vec<Command>) {
    egui::Panel::left("browser")
        .resizable(true)
        .default_size(260.0)
        .show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| {
                make_plan_ui(ui, app, commands);
                ui.separator();
                plan_list_ui(ui, app, commands);
                ui.separator();
                finetune_ui(ui, app, commands);
            });
        });
}

fn make_plan_ui(ui: &mut egui::Ui, app: &mut StudioApp, commands: &mut Vec<Command>) {
    ui.heading("Make a plan");
    let worlds: Vec<(String, String)> = app
        .worlds()
        .iter()
        .map(|w| {
            let text = match w.setup_needed {
                Some(_) => format!("{} (needs setup)", w.name),
                None => w.name.clone(),
            };
            (w.name.clone(), text)
        })
        .collect();
    let mut world = app.settings.world.clone();
    egui::Grid::new("make_plan_world")
        .num_columns(2)
        .show(ui, |ui| choice_row(ui, "World", &mut world, &worlds));
    if world != app.settings.world {
        app.select_world(&world);
    }
    if let Some(hint) = app
        .worlds()
        .iter()
        .find(|w| w.name == app.settings.world)
        .and_then(|w| w.setup_needed.as_ref())
    {
        ui.weak(hint);
    }
    let tasks: Vec<(String, String)> = app
        .tasks()
        .iter()
        .map(|t| (t.name.clone(), format!("{} ({:?})", t.name, t.difficulty)))
        .collect();
    let views: Vec<(usize, String)> = app
        .views()
        .iter()
        .enumerate()
        .map(|(i, v)| (i, v.name.clone()))
        .collect();
    let local_configured = app.options.local_critic.is_some();
    let critics: Vec<(CriticChoice, String)> = CriticChoice::offered(local_configured)
        .map(|c| (c, c.label().to_owned()))
        .collect();
    let s = &mut app.settings;
    egui::Grid::new("make_plan").num_columns(2).show(ui, |ui| {
        choice_row(ui, "Task", &mut s.task, &tasks);
        choice_row(ui, "View", &mut s.view, &views);
        let name = ui.label("Seed");
        ui.add(egui::DragValue::new(&mut s.seed))
            .labelled_by(name.id);
        ui.end_row();
        let name = ui.label("Instruction");
        ui.add(
            egui::TextEdit::singleline(&mut s.instruction)
                .hint_text("the task's own")
                .desired_width(150.0),
        )
        .labelled_by(name.id);
        ui.end_row();
        choice_row(ui, "Critic", &mut s.critic, &critics);
        if s.critic == CriticChoice::Perception {
            rejects_on_row(ui, &mut s.rejects_on);
            scope_row(ui, &mut s.scope);
        }
        if s.critic == CriticChoice::Vlm {
            let name = ui.label("VLM server");
            ui.add(
                egui::TextEdit::singleline(&mut s.vlm.base_url)
                    .hint_text("http://localhost:8000/v1")
                    .desired_width(150.0),
            )
            .labelled_by(name.id)
            .on_hover_text("OpenAI-compatible; the key is read from $OPENAI_API_KEY");
            ui.end_row();
            let name = ui.label("VLM model");
            ui.add(egui::TextEdit::singleline(&mut s.vlm.model).desired_width(150.0))
                .labelled_by(name.id);
            ui.end_row();
        }
        let name = ui.label("Refinements");
        ui.add(egui::Slider::new(&mut s.max_refinements, 0..=4))
            .labelled_by(name.id);
        ui.end_row();
        let name = ui.label("Sampler steps");
        ui.add(egui::Slider::new(&mut s.sampler_steps, 2..=50))
            .labelled_by(name.id);
        ui.end_row();
        let name = ui.label("Guidance");
        ui.add(egui::Slider::new(&mut s.guidance, 0.0..=5.0))
            .labelled_by(name.id);
        ui.end_row();
    });
    ui.horizontal(|ui| match &app.settings.image {
        Some((name, _)) => {
            ui.label(format!("First frame {name}"));
            if ui
                .small_button("x")
                .on_hover_text("Back to world starts")
                .clicked()
            {
                commands.push(Command::Job(JobCommand::ClearImage));
            }
        }
        None => {
            if ui
                .button("Open first frame…")
                .on_hover_text("Plan from an image instead of a world start")
                .clicked()
            {
                commands.push(Command::Job(JobCommand::OpenImage));
            }
        }
    });
    ui.horizontal(|ui| {
        let busy = app.is_generating();
        if ui
            .add_enabled(!busy, egui::Button::new("Generate"))
            .on_hover_text("Ctrl+Enter")
            .clicked()
        {
            commands.push(Command::Job(JobCommand::Generate));
        }
        if busy && ui.button("Cancel").on_hover_text("Esc").clicked() {
            commands.push(Command::Job(JobCommand::Cancel));
        }
    });
}

fn plan_list_ui(ui: &mut egui::Ui, app: &StudioApp, commands: &mut Vec<Command>) {
    let studio = &app.studio;
    ui.heading("Plans");
    let mut filter = studio.filter.clone();
    let tasks: Vec<(Option<String>, String)> = std::iter::once((None, "All tasks".to_owned()))
        .chain(
            app.tasks()
                .iter()
                .map(|t| (Some(t.name.clone()), t.name.clone())),
        )
        .collect();
    let views: Vec<(Option<usize>, String)> = std::iter::once((None, "All views".to_owned()))
        .chain(
            app.views()
                .iter()
                .enumerate()
                .map(|(i, v)| (Some(i), v.name.clone())),
        )
        .collect();
    let mut names: std::collections::BTreeSet<String> = studio
        .plans
        .iter()
        .flat_map(|p| p.labelled_by.iter().cloned())
        .collect();
    names.insert(studio.annotator.clone());
    let annotators: Vec<(Option<String>, String)> =
        std::iter::once((None, "Any annotator".to_owned()))
            .chain(names.into_iter().map(|n| (Some(n.clone()), n)))
            .collect();
    let tags: Vec<(Option<Tag>, String)> = std::iter::once((None, "Any tag".to_owned()))
        .chain(Tag::ALL.iter().map(|t| (Some(*t), t.label().to_owned())))
        .collect();
    egui::Grid::new("plan_filters")
        .num_columns(2)
        .show(ui, |ui| {
            choice_row(ui, "Task", &mut filter.task, &tasks);
            choice_row(ui, "View", &mut filter.view, &views);
            let status = labelled(StatusFilter::ALL, StatusFilter::label);
            choice_row(ui, "Verdict", &mut filter.status, &status);
            choice_row(ui, "Tag", &mut filter.tag, &tags);
            let critic = labelled(CriticFilter::ALL, CriticFilter::label);
            choice_row(ui, "Critic", &mut filter.critic, &critic);
            choice_row(ui, "Annotator", &mut filter.annotator, &annotators);
            let age = labelled(AgeFilter::ALL, AgeFilter::label);
            choice_row(ui, "Date", &mut filter.age, &age);
            let sort = labelled(SortOrder::ALL, SortOrder::label);
            choice_row(ui, "Order", &mut filter.sort, &sort);
        });
    if filter != studio.filter {
        commands.push(Command::SetFilter(filter));
    }
    for plan in studio.visible_plans() {
        let label = studio.labels.get(&plan.id);
        let mark = match label.and_then(|l| l.verdict) {
            Some(Verdict::Accept) => "[A]",
            Some(Verdict::Reject) => "[R]",
            None => "[ ]",
        };
        let text = format!("{mark} {}", plan.title());
        if ui
            .selectable_label(studio.selected == Some(plan.id), text)
            .clicked()
        {
            commands.push(Command::SelectPlan(plan.id));
        }
    }
    if studio.plans.is_empty() {
        ui.weak("No plans yet: press Generate.");
    }
    ui.separator();
    let curated = studio.curated();
    ui.label(format!("Curated set: {} plans", curated.len()));
    let mut per_task: std::collections::BTreeMap<&str, usize> = Default::default();
    for plan in curated {
        *per_task.entry(plan.origin.task.as_str()).or_default() += 1;
    }
    for (task, n) in per_task {
        ui.weak(format!("  {task}: {n}"));
    }
}

fn finetune_ui(ui: &mut egui::Ui, app: &mut StudioApp, commands: &mut Vec<Command>) {
    ui.heading("Fine-tune");
    let curated = app.studio.curated().len();
    ui.horizontal(|ui| {
        let name = ui.label("Steps");
        ui.add(egui::DragValue::new(&mut app.finetune_steps).range(1..=100_000))
            .labelled_by(name.id);
    });
    let running = app.is_finetuning();
    ui.horizontal(|ui| {
        if ui
            .add_enabled(
                !running && curated > 0,
                egui::Button::new("Fine-tune on curated set"),
            )
            .on_hover_text("Trains a copy of the model on the accepted plans")
            .clicked()
        {
            commands.push(Command::Job(JobCommand::FineTune));
        }
        if running && ui.button("Stop").clicked() {
            commands.push(Command::Job(JobCommand::Cancel));
        }
    });
    let status = &app.finetune_status;
    if running || !status.losses.is_empty() {
        let fraction = status.step as f32 / status.total.max(1) as f32;
        let eta_secs = if status.steps_per_sec > 0.0 {
            status.total.saturating_sub(status.step) as f64 / status.steps_per_sec
        } else {
            0.0
        };
        ui.add(egui::ProgressBar::new(fraction).text(format!(
            "step {}/{}  {:.2} steps/s  eta {:.0} s",
            status.step, status.total, status.steps_per_sec, eta_secs
        )));
        egui_plot::Plot::new("finetune_loss")
            .height(110.0)
            .allow_scroll(false)
            .show(ui, |plot| {
                plot.line(egui_plot::Line::new("loss", status.losses.clone()));
            });
    }
    if let Some(dir) = &status.result {
        ui.label(format!("New model in {}", dir.display()));
        ui.horizontal(|ui| {
            if ui.button("Use the new model").clicked() {
                commands.push(Command::Job(JobCommand::UseFineTuned));
            }
            if ui.button("Keep the current one").clicked() {
                commands.push(Command::Job(JobCommand::DiscardFineTuned));
            }
        });
    }
}

/// The options of a choice enum, each with its label.
fn labelled<T: Copy>(all: &[T], label: fn(T) -> &'static str) -> Vec<(T, String)> {
    all.iter().map(|v| (*v, label(*v).to_owned())).collect()
}

/// A labelled combo box in a two-column grid: `options` pairs each value with its text.
fn choice_row<T: Clone + PartialEq>(
    ui: &mut egui::Ui,
    label: &str,
    value: &mut T,
    options: &[(T, String)],
) {
    let name = ui.label(label);
    let selected = options
        .iter()
        .find(|(v, _)| v == value)
        .map_or_else(String::new, |(_, text)| text.clone());
    egui::ComboBox::from_id_salt(name.id)
        .selected_text(selected)
        .show_ui(ui, |ui| {
            for (v, text) in options {
                ui.selectable_value(value, v.clone(), text);
            }
        })
        .response
        .labelled_by(name.id);
    ui.end_row();
}

/// Whether only the task object's glitches make the perception critic reject. Execution
/// follows the task object only, so another thing's glitch need not fail a plan.
fn scope_row(ui: &mut egui::Ui, scope: &mut FindingScope) {
    ui.label("");
    let mut task_only = *scope == FindingScope::TaskObject;
    if ui
        .checkbox(&mut task_only, "only the task object's glitches")
        .on_hover_text(
            "Reject for glitches of the task's object (the thing the plan is executed by), an \
             unmoved gripper or an unreached goal; other things' glitches are only reported",
        )
        .changed()
    {
        *scope = if task_only {
            FindingScope::TaskObject
        } else {
            FindingScope::Everything
        };
    }
    ui.end_row();
}

/// Which kinds of finding make the perception critic reject; the others are reported on an
/// accepted plan. Folded by default: the kinds share names with the annotation tags.
fn rejects_on_row(ui: &mut egui::Ui, rejects_on: &mut Vec<FindingKind>) {
    ui.label("Rejects on");
    let summary = match rejects_on.len() {
        n if n == FindingKind::ALL.len() => "every kind of finding".to_owned(),
        0 => "nothing (accepts every plan)".to_owned(),
        n => format!("{n} of {} kinds", FindingKind::ALL.len()),
    };
    egui::CollapsingHeader::new(summary)
        .id_salt("rejects_on")
        .show(ui, |ui| {
            for kind in FindingKind::ALL {
                let mut on = rejects_on.contains(&kind);
                if ui.checkbox(&mut on, kind.label()).changed() {
                    rejects_on.retain(|k| *k != kind);
                    if on {
                        rejects_on.push(kind);
                    }
                }
            }
        });
    ui.end_row();
}
