//! Left panel: make a plan (world start, sampler and refinement settings), then the list of
//! plans with filters and the curated-set counts.

use crate::app::StudioApp;
use crate::app::command::{Command, JobCommand};
use crate::app::state::{StatusFilter, Tag, Verdict};

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
    let tasks: Vec<(String, String)> = app
        .tasks()
        .iter()
        .map(|t| (t.name.clone(), format!("{} ({:?})", t.name, t.difficulty)))
        .collect();
    let views: Vec<String> = app.views().iter().map(|v| v.name.clone()).collect();
    let local_configured = app.options.local_critic.is_some();
    let s = &mut app.settings;
    egui::Grid::new("make_plan").num_columns(2).show(ui, |ui| {
        ui.label("Task");
        egui::ComboBox::from_id_salt("task")
            .selected_text(s.task.clone())
            .show_ui(ui, |ui| {
                for (name, text) in &tasks {
                    ui.selectable_value(&mut s.task, name.clone(), text);
                }
            });
        ui.end_row();
        ui.label("View");
        egui::ComboBox::from_id_salt("view")
            .selected_text(views.get(s.view).cloned().unwrap_or_default())
            .show_ui(ui, |ui| {
                for (i, name) in views.iter().enumerate() {
                    ui.selectable_value(&mut s.view, i, name);
                }
            });
        ui.end_row();
        ui.label("Seed");
        ui.add(egui::DragValue::new(&mut s.seed));
        ui.end_row();
        ui.label("Instruction");
        ui.add(
            egui::TextEdit::singleline(&mut s.instruction)
                .hint_text("the task's own")
                .desired_width(150.0),
        );
        ui.end_row();
        ui.label("Critic");
        egui::ComboBox::from_id_salt("critic")
            .selected_text(s.critic.label())
            .show_ui(ui, |ui| {
                for c in crate::app::jobs::CriticChoice::offered(local_configured) {
                    ui.selectable_value(&mut s.critic, c, c.label());
                }
            });
        ui.end_row();
        ui.label("Refinements");
        ui.add(egui::Slider::new(&mut s.max_refinements, 0..=4));
        ui.end_row();
        ui.label("Sampler steps");
        ui.add(egui::Slider::new(&mut s.sampler_steps, 2..=50));
        ui.end_row();
        ui.label("Guidance");
        ui.add(egui::Slider::new(&mut s.guidance, 0.0..=5.0));
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
    ui.horizontal(|ui| {
        egui::ComboBox::from_id_salt("filter_task")
            .selected_text(filter.task.clone().unwrap_or_else(|| "All tasks".into()))
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut filter.task, None, "All tasks");
                for t in app.tasks() {
                    ui.selectable_value(&mut filter.task, Some(t.name.clone()), &t.name);
                }
            });
        egui::ComboBox::from_id_salt("filter_status")
            .selected_text(filter.status.label())
            .show_ui(ui, |ui| {
                for status in StatusFilter::ALL {
                    ui.selectable_value(&mut filter.status, status, status.label());
                }
            });
    });
    egui::ComboBox::from_id_salt("filter_tag")
        .selected_text(filter.tag.map_or("Any tag", Tag::label))
        .show_ui(ui, |ui| {
            ui.selectable_value(&mut filter.tag, None, "Any tag");
            for tag in Tag::ALL {
                ui.selectable_value(&mut filter.tag, Some(tag), tag.label());
            }
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
        ui.label("Steps");
        ui.add(egui::DragValue::new(&mut app.finetune_steps).range(1..=100_000));
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
