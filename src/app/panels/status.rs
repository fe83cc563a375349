//! The status bar (device, model, plans, curated set) and the toasts in the corner.

use crate::app::command::{Command, JobCommand};
use crate::app::{StudioApp, Toast};

const TOAST_SECS: f64 = 4.0;

pub fn status_bar(ui: &mut egui::Ui, app: &StudioApp, commands: &mut Vec<Command>) {
    egui::Panel::top("status_bar").show(ui, |ui| {
        ui.horizontal(|ui| {
            ui.strong("VideoAgent Studio");
            ui.separator();
            ui.label(app.model_status());
            let mut device = app.device().to_owned();
            egui::ComboBox::from_id_salt("device")
                .selected_text(format!("run on {device}"))
                .show_ui(ui, |ui| {
                    for name in crate::model::device::DEVICE_NAMES {
                        ui.selectable_value(&mut device, name.to_owned(), name);
                    }
                })
                .response
                .on_hover_text("The device that runs the model")
                .widget_info(|| egui::WidgetInfo::labeled(egui::Role::ComboBox, true, "Device"));
            if device != app.device() {
                commands.push(Command::Job(JobCommand::SwitchDevice(device)));
            }
            ui.separator();
            ui.label(format!(
                "{} plans, {} curated",
                app.studio.plans.len(),
                app.studio.curated().len()
            ));
            ui.separator();
            ui.label(app.store_status());
            ui.separator();
            let demo = if app.studio.demo {
                "Leave demo"
            } else {
                "Demo"
            };
            if ui.button(demo).on_hover_text("F11").clicked() {
                commands.push(Command::ToggleDemo);
            }
            ui.weak("? shortcuts");
        });
    });
}

/// Shows the toasts; each disappears `TOAST_SECS` after it was first shown.
pub fn toasts(ctx: &egui::Context, toasts: &mut Vec<Toast>) {
    let now = ctx.input(|i| i.time);
    toasts.retain(|t| t.shown_at_secs.is_none_or(|at| now - at < TOAST_SECS));
    if toasts.is_empty() {
        return;
    }
    egui::Area::new(egui::Id::unique("toasts"))
        .anchor(egui::Align2::RIGHT_BOTTOM, egui::vec2(-12.0, -48.0))
        .show(ctx, |ui| {
            for toast in toasts.iter_mut() {
                toast.shown_at_secs.get_or_insert(now);
                egui::Frame::popup(ui.style()).show(ui, |ui| {
                    if toast.is_error {
                        ui.colored_label(ui.visuals().error_fg_color, &toast.text);
                    } else {
                        ui.label(&toast.text);
                    }
                });
            }
        });
    ctx.request_repaint_after(std::time::Duration::from_millis(250));
}
