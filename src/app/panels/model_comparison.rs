//! The model before and after a fine-tune on the same held-out starts: the expert's video, both
//! plans and their scores side by side, and the choice of which model to keep.

use egui::{Color32, Rect, Vec2};

use crate::agent::model_eval::{ComparedStart, ScoredPlan};
use crate::app::StudioApp;
use crate::app::command::{Command, JobCommand};
use crate::app::textures::TextureKey;
use crate::env::Rgb8Image;

const THUMB: f32 = 44.0;

pub fn model_comparison(ctx: &egui::Context, app: &mut StudioApp, commands: &mut Vec<Command>) {
    let mut open = true;
    egui::Window::new("Old vs new model")
        .open(&mut open)
        .default_pos([420.0, 60.0])
        .default_width(8.0 * (THUMB + 4.0) + 80.0)
        .show(ctx, |ui| {
            if let Some((done, total)) = app.comparison.progress {
                ui.add(
                    egui::ProgressBar::new(done as f32 / total.max(1) as f32).text(format!(
                        "planning held-out starts with both models: {done}/{total}"
                    )),
                );
            }
            // Taken out for the frame so the texture cache can be borrowed; put back below.
            let starts = std::mem::take(&mut app.comparison.starts);
            if !starts.is_empty() {
                summary_ui(ui, &starts);
                ui.separator();
                egui::ScrollArea::vertical()
                    .max_height(420.0)
                    .show(ui, |ui| {
                        for (k, start) in starts.iter().enumerate() {
                            start_ui(ui, app, k, start);
                        }
                    });
            }
            app.comparison.starts = starts;
            if app.finetune_status.result.is_some() {
                ui.separator();
                ui.horizontal(|ui| {
                    if ui.button("Keep the new model").clicked() {
                        commands.push(Command::Job(JobCommand::UseFineTuned));
                    }
                    if ui.button("Keep the old model").clicked() {
                        commands.push(Command::Job(JobCommand::DiscardFineTuned));
                    }
                });
            }
        });
    if !open {
        commands.push(Command::Job(JobCommand::ToggleModelComparison));
    }
}

/// Mean scores over every start, before and after.
fn summary_ui(ui: &mut egui::Ui, starts: &[ComparedStart]) {
    let n = starts.len() as f64;
    let mean = |f: &dyn Fn(&ComparedStart) -> f64| starts.iter().map(f).sum::<f64>() / n;
    let kept = |plan: fn(&ComparedStart) -> &ScoredPlan| {
        starts
            .iter()
            .filter(|s| plan(s).score.final_position_error.is_some())
            .count()
    };
    let error = |plan: fn(&ComparedStart) -> &ScoredPlan| {
        let found: Vec<f64> = starts
            .iter()
            .filter_map(|s| plan(s).score.final_position_error)
            .collect();
        if found.is_empty() {
            "-".to_owned()
        } else {
            format!("{:.1} px", found.iter().sum::<f64>() / found.len() as f64)
        }
    };
    egui::Grid::new("model_comparison_summary")
        .striped(true)
        .show(ui, |ui| {
            ui.strong(format!("{} held-out starts", starts.len()));
            ui.strong("old");
            ui.strong("new");
            ui.end_row();
            ui.label("PSNR to the expert (dB)");
            ui.label(format!("{:.2}", mean(&|s| s.before.score.psnr)));
            ui.label(format!("{:.2}", mean(&|s| s.after.score.psnr)));
            ui.end_row();
            ui.label("SSIM to the expert");
            ui.label(format!("{:.3}", mean(&|s| s.before.score.ssim)));
            ui.label(format!("{:.3}", mean(&|s| s.after.score.ssim)));
            ui.end_row();
            ui.label("task object at the end");
            ui.label(format!("{}/{}", kept(|s| &s.before), starts.len()));
            ui.label(format!("{}/{}", kept(|s| &s.after), starts.len()));
            ui.end_row();
            ui.label("its position error");
            ui.label(error(|s| &s.before));
            ui.label(error(|s| &s.after));
            ui.end_row();
        });
}

/// One start: the expert's video, then the old and the new model's plans (start frame first).
fn start_ui(ui: &mut egui::Ui, app: &mut StudioApp, k: usize, start: &ComparedStart) {
    let s = &start.before.score;
    ui.strong(format!("{}  view {}  #{}", s.task, s.view, s.seed));
    let expert: Vec<&Rgb8Image> = start.before.expert.iter().collect();
    let rows: [(&str, Vec<&Rgb8Image>, Option<&ScoredPlan>); 3] = [
        ("expert", expert.clone(), None),
        (
            "old",
            std::iter::once(expert[0])
                .chain(&start.before.plan)
                .collect(),
            Some(&start.before),
        ),
        (
            "new",
            std::iter::once(expert[0])
                .chain(&start.after.plan)
                .collect(),
            Some(&start.after),
        ),
    ];
    for (row, (name, frames, scored)) in rows.into_iter().enumerate() {
        ui.horizontal(|ui| {
            ui.add_sized([40.0, THUMB], egui::Label::new(name));
            for (i, frame) in frames.iter().enumerate() {
                let key = TextureKey::ModelComparison {
                    start: k,
                    row,
                    frame_idx: i,
                };
                let texture = app
                    .textures
                    .get_or_upload(ui.ctx(), key, || (*frame).clone());
                let (rect, _) = ui.allocate_exact_size(Vec2::splat(THUMB), egui::Sense::hover());
                ui.painter().image(
                    texture.id(),
                    rect,
                    Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0)),
                    Color32::WHITE,
                );
            }
            if let Some(p) = scored {
                let error = p
                    .score
                    .final_position_error
                    .map_or_else(|| "object lost".to_owned(), |e| format!("{e:.1} px"));
                ui.label(format!("{:.1} dB  {error}", p.score.psnr));
            }
        });
    }
    ui.add_space(4.0);
}
