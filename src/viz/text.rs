//! Words in the PNG figures (chart labels, legends, critiques under plans): egui's own Ubuntu
//! font, rasterised with `ab_glyph` and blended into the image.

use std::sync::OnceLock;

use ab_glyph::{Font, FontRef, PxScale, ScaleFont};

fn font() -> &'static FontRef<'static> {
    static FONT: OnceLock<FontRef<'static>> = OnceLock::new();
    FONT.get_or_init(|| {
        FontRef::try_from_slice(epaint_default_fonts::UBUNTU_LIGHT)
            .expect("egui's bundled Ubuntu font parses")
    })
}

/// The width of `text` at `px` pixels per em.
pub fn text_width(text: &str, px: f32) -> f32 {
    let font = font().as_scaled(PxScale::from(px));
    let mut width = 0.0;
    let mut last = None;
    for c in text.chars() {
        let id = font.glyph_id(c);
        if let Some(prev) = last {
            width += font.kern(prev, id);
        }
        width += font.h_advance(id);
        last = Some(id);
    }
    width
}

/// The height of one line at `px`, ascent to descent plus line gap.
pub fn line_height(px: f32) -> f32 {
    let font = font().as_scaled(PxScale::from(px));
    font.height() + font.line_gap()
}

/// Draws `text` with its top-left corner at (`x`, `y`); glyphs outside the image are clipped.
pub fn draw_text(img: &mut image::RgbImage, text: &str, x: f32, y: f32, px: f32, colour: [u8; 3]) {
    let scale = PxScale::from(px);
    let font = font().as_scaled(scale);
    let baseline = y + font.ascent();
    let mut caret = x;
    let mut last = None;
    for c in text.chars() {
        let id = font.glyph_id(c);
        if let Some(prev) = last {
            caret += font.kern(prev, id);
        }
        let glyph = id.with_scale_and_position(scale, ab_glyph::point(caret, baseline));
        caret += font.h_advance(id);
        last = Some(id);
        let Some(outline) = font.outline_glyph(glyph) else {
            continue;
        };
        let bounds = outline.px_bounds();
        outline.draw(|gx, gy, coverage| {
            let px = bounds.min.x as i64 + i64::from(gx);
            let py = bounds.min.y as i64 + i64::from(gy);
            if px < 0 || py < 0 || px >= i64::from(img.width()) || py >= i64::from(img.height()) {
                return;
            }
            let pixel = img.get_pixel_mut(px as u32, py as u32);
            let a = coverage.clamp(0.0, 1.0);
            for (channel, &ink) in pixel.0.iter_mut().zip(&colour) {
                *channel = (f32::from(*channel) * (1.0 - a) + f32::from(ink) * a).round() as u8;
            }
        });
    }
}

/// `text` broken into lines no wider than `max_width` at `px` (at spaces; a single word wider
/// than that stays whole on its line).
pub fn wrap(text: &str, px: f32, max_width: f32) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let candidate = if line.is_empty() {
            word.to_owned()
        } else {
            format!("{line} {word}")
        };
        if line.is_empty() || text_width(&candidate, px) <= max_width {
            line = candidate;
        } else {
            lines.push(std::mem::replace(&mut line, word.to_owned()));
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_leaves_ink_where_it_is_drawn_and_nowhere_else() {
        let mut img = image::RgbImage::from_pixel(120, 30, image::Rgb([255, 255, 255]));
        draw_text(&mut img, "Reject", 10.0, 5.0, 16.0, [0, 0, 0]);
        let width = text_width("Reject", 16.0);
        assert!((30.0..70.0).contains(&width), "width {width}");
        let inked: Vec<(u32, u32)> = img
            .enumerate_pixels()
            .filter(|(_, _, p)| p.0[0] < 128)
            .map(|(x, y, _)| (x, y))
            .collect();
        assert!(inked.len() > 30, "{} dark pixels", inked.len());
        for &(x, y) in &inked {
            assert!((10..=10 + width.ceil() as u32).contains(&x), "ink at x {x}");
            assert!(
                (5..5 + line_height(16.0).ceil() as u32).contains(&y),
                "ink at y {y}"
            );
        }
    }

    #[test]
    fn wrapping_keeps_every_word_in_order_within_the_width() {
        let text = "The red block vanished in frame 3. Keep it in view and push it left.";
        let lines = wrap(text, 12.0, 120.0);
        assert!(lines.len() > 1);
        assert_eq!(lines.join(" "), text);
        for line in &lines[..lines.len() - 1] {
            assert!(text_width(line, 12.0) <= 120.0, "'{line}' is too wide");
        }
        assert_eq!(wrap("", 12.0, 50.0), Vec::<String>::new());
        assert_eq!(wrap("unbreakableword", 12.0, 5.0), vec!["unbreakableword"]);
    }
}
