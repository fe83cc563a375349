//! The shared timeline: one frame index for every iteration row, so all of them play in sync.

/// Frame position and play state, advanced by wall-clock time.
#[derive(Clone, Debug, PartialEq)]
pub struct Playback {
    pub frame_idx: usize,
    pub playing: bool,
    pub looping: bool,
    pub frames_per_sec: f32,
    /// Time (seconds, the UI clock) of the last advance while playing.
    last_advance_secs: Option<f64>,
}

impl Default for Playback {
    fn default() -> Self {
        Self {
            frame_idx: 0,
            playing: false,
            looping: true,
            frames_per_sec: 4.0,
            last_advance_secs: None,
        }
    }
}

impl Playback {
    /// Moves by `delta` frames, clamped to `0..frame_count`.
    pub fn step(&mut self, delta: i64, frame_count: usize) {
        let last = frame_count.saturating_sub(1) as i64;
        self.frame_idx = (self.frame_idx as i64 + delta).clamp(0, last.max(0)) as usize;
    }

    pub fn seek(&mut self, frame_idx: usize, frame_count: usize) {
        self.frame_idx = frame_idx.min(frame_count.saturating_sub(1));
    }

    pub fn toggle(&mut self) {
        self.playing = !self.playing;
        self.last_advance_secs = None;
    }

    /// Advances as many frames as the time since the last advance allows. Returns the seconds
    /// until the next frame is due while playing (for `request_repaint_after`).
    pub fn tick(&mut self, now_secs: f64, frame_count: usize) -> Option<f64> {
        if !self.playing || frame_count == 0 {
            return None;
        }
        let period = 1.0 / f64::from(self.frames_per_sec.max(0.1));
        let last = *self.last_advance_secs.get_or_insert(now_secs);
        let due = ((now_secs - last) / period).floor() as usize;
        if due > 0 {
            self.last_advance_secs = Some(last + due as f64 * period);
            let next = self.frame_idx + due;
            if next >= frame_count {
                if self.looping {
                    self.frame_idx = next % frame_count;
                } else {
                    self.frame_idx = frame_count - 1;
                    self.playing = false;
                    return None;
                }
            } else {
                self.frame_idx = next;
            }
        }
        let since = now_secs - self.last_advance_secs.unwrap_or(now_secs);
        Some((period - since).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::Playback;

    #[test]
    fn steps_clamp_to_the_plan() {
        let mut p = Playback::default();
        p.step(-1, 8);
        assert_eq!(p.frame_idx, 0);
        p.step(10, 8);
        assert_eq!(p.frame_idx, 7);
        p.seek(3, 8);
        assert_eq!(p.frame_idx, 3);
        p.seek(99, 8);
        assert_eq!(p.frame_idx, 7);
    }

    #[test]
    fn playing_advances_with_time_and_loops() {
        let mut p = Playback {
            frames_per_sec: 4.0,
            ..Playback::default()
        };
        p.toggle();
        assert!(p.tick(10.0, 8).is_some());
        assert_eq!(p.frame_idx, 0);
        p.tick(10.5, 8); // two periods of 0.25 s
        assert_eq!(p.frame_idx, 2);
        p.tick(12.0, 8); // six more: 8 wraps to 0
        assert_eq!(p.frame_idx, 0);
        p.looping = false;
        p.tick(14.0, 8);
        assert_eq!(p.frame_idx, 7);
        assert!(!p.playing, "stops at the end without looping");
    }
}
