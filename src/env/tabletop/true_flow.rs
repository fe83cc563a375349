//! Exact optical flow between two recorded states of the tabletop, for testing flow
//! estimators: every pixel of the first frame belongs to one rigid thing (or the table, or
//! the gripper) by the segmentation, and moves with that thing's pose change through the
//! camera. Pixels whose thing is hidden in the second frame still get the motion of their
//! thing (occlusion is not modelled).

use rapier2d::math::{Pose, Vector};

use super::render::{CAMERAS, gripper_scale};
use crate::env::WorldError;
use crate::env::demo::StateRecord;

/// Where a pixel of the first frame shows the same material point in the second.
type PixelMap = Box<dyn Fn(Vector) -> Vector>;

/// Flow `[dx, dy]` (pixels, row-major) of every pixel of a `size` x `size` frame of `view`
/// from the state `from` (whose segmentation and labels are given) to the state `to`.
pub fn ground_truth_flow(
    view: usize,
    size: u32,
    segmentation: &[u8],
    labels: &[String],
    from: &StateRecord,
    to: &StateRecord,
) -> Result<Vec<[f32; 2]>, WorldError> {
    let camera = CAMERAS.get(view).ok_or_else(|| WorldError::UnknownView {
        view: view.to_string(),
        valid: format!("0..{}", CAMERAS.len() - 1),
    })?;
    if segmentation.len() != (size * size) as usize {
        return Err(WorldError::Render(format!(
            "segmentation has {} pixels, expected {}",
            segmentation.len(),
            size * size
        )));
    }
    // Per label id: the map from a pixel of the first frame to the same material point's
    // pixel in the second frame (None: the table, which does not move).
    let maps: Vec<Option<PixelMap>> = labels
        .iter()
        .map(|name| -> Option<PixelMap> {
            if name == "gripper" {
                let pose =
                    |g: &crate::env::GripperState| Pose::from_translation(Vector::new(g.x, g.y));
                let a = camera
                    .pixel_map(size, from.gripper.z)
                    .then_pose(&pose(&from.gripper));
                let b = camera
                    .pixel_map(size, to.gripper.z)
                    .then_pose(&pose(&to.gripper));
                let grow = gripper_scale(to.gripper.z) / gripper_scale(from.gripper.z);
                let back = a.inverse();
                return Some(Box::new(move |p| b.apply(back.apply(p) * grow)));
            }
            let o0 = from.objects.iter().find(|o| &o.name == name)?;
            let o1 = to.objects.iter().find(|o| &o.name == name)?;
            let a = camera
                .pixel_map(size, o0.z)
                .then_pose(&Pose::new(Vector::new(o0.x, o0.y), o0.angle));
            let b = camera
                .pixel_map(size, o1.z)
                .then_pose(&Pose::new(Vector::new(o1.x, o1.y), o1.angle));
            let back = a.inverse();
            Some(Box::new(move |p| b.apply(back.apply(p))))
        })
        .collect();
    Ok(segmentation
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            let p = Vector::new(
                (i as u32 % size) as f32 + 0.5,
                (i as u32 / size) as f32 + 0.5,
            );
            match maps.get(usize::from(id)).and_then(Option::as_ref) {
                Some(map) => {
                    let q = map(p);
                    [q.x - p.x, q.y - p.y]
                }
                None => [0.0, 0.0],
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::demo::record_expert;
    use crate::env::tabletop::Tabletop;

    #[test]
    fn still_states_have_zero_flow_and_moved_objects_move_their_pixels() {
        let mut world = Tabletop::new(64).expect("world");
        let demo = record_expert(&mut world, "push", 2, 3).expect("demo");
        let n = demo.frames.len() - 1;
        let still = ground_truth_flow(
            2,
            64,
            &demo.segmentations[0],
            &demo.labels,
            &demo.states[0],
            &demo.states[0],
        )
        .expect("flow");
        assert!(still.iter().all(|v| v[0].abs() < 1e-4 && v[1].abs() < 1e-4));
        let flow = ground_truth_flow(
            2,
            64,
            &demo.segmentations[0],
            &demo.labels,
            &demo.states[0],
            &demo.states[n],
        )
        .expect("flow");
        let block = demo
            .labels
            .iter()
            .position(|l| l == "block")
            .expect("block") as u8;
        let (b0, b1) = (
            demo.states[0].objects.iter().find(|o| o.name == "block"),
            demo.states[n].objects.iter().find(|o| o.name == "block"),
        );
        let (b0, b1) = (b0.expect("block"), b1.expect("block"));
        let cam = &CAMERAS[2];
        let expected = super::super::render::project(cam, 64, Vector::new(b1.x, b1.y), 0.0)
            - super::super::render::project(cam, 64, Vector::new(b0.x, b0.y), 0.0);
        let ids: Vec<usize> = (0..demo.segmentations[0].len())
            .filter(|&i| demo.segmentations[0][i] == block)
            .collect();
        assert!(!ids.is_empty());
        let mean = ids.iter().fold([0.0f32; 2], |acc, &i| {
            [acc[0] + flow[i][0], acc[1] + flow[i][1]]
        });
        let mean = Vector::new(mean[0], mean[1]) / ids.len() as f32;
        // The block also turns a little, so the mean flow matches its centre's motion only
        // roughly; the table does not move at all.
        assert!(mean.distance(expected) < 1.0, "{mean:?} vs {expected:?}");
        assert!(expected.length() > 5.0);
        assert_eq!(flow[0], [0.0, 0.0]);
    }
}
