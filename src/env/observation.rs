use serde::{Deserialize, Serialize};

/// An RGB image, row-major, 3 bytes per pixel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rgb8Image {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

impl Rgb8Image {
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = ((y * self.width + x) * 3) as usize;
        [self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]]
    }

    pub fn to_image(&self) -> image::RgbImage {
        image::RgbImage::from_raw(self.width, self.height, self.pixels.clone())
            .expect("pixel buffer length is width * height * 3 by construction")
    }
}

/// Where the gripper is and what it does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GripperState {
    /// Table coordinates, metres-like units; the table spans [-1, 1] on both axes.
    pub x: f32,
    pub y: f32,
    /// Height above the table: 0 touches it, 1 is fully raised.
    pub z: f32,
    pub closed: bool,
    /// Name of the object held, if any.
    pub holding: Option<String>,
}

/// The pose of a named object in table coordinates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObjectPose {
    pub name: String,
    pub x: f32,
    pub y: f32,
    pub angle: f32,
    /// Height above the table (objects that are carried are lifted).
    pub z: f32,
}

/// Everything a world shows after a reset or a step.
#[derive(Clone, Debug)]
pub struct Observation {
    pub rgb: Rgb8Image,
    /// One label id per pixel; `labels[id]` names it (`0` is the table).
    pub segmentation: Vec<u8>,
    pub labels: Vec<String>,
    pub gripper: GripperState,
    pub objects: Vec<ObjectPose>,
}

impl Observation {
    /// A camera image from outside any world (a first frame the user opened): everything is
    /// "table" to the segmentation, the gripper state is unknown (at the origin), no objects.
    pub fn from_image(rgb: Rgb8Image) -> Self {
        let pixels = (rgb.width * rgb.height) as usize;
        Self {
            rgb,
            segmentation: vec![0; pixels],
            labels: vec!["table".to_owned()],
            gripper: GripperState {
                x: 0.0,
                y: 0.0,
                z: 1.0,
                closed: false,
                holding: None,
            },
            objects: Vec::new(),
        }
    }

    /// Pixels of the object called `name` as (x, y) pixel coordinates.
    pub fn mask_pixels(&self, name: &str) -> Vec<(u32, u32)> {
        let Some(id) = self.labels.iter().position(|l| l == name) else {
            return Vec::new();
        };
        let w = self.rgb.width;
        self.segmentation
            .iter()
            .enumerate()
            .filter(|(_, s)| usize::from(**s) == id)
            .map(|(i, _)| (i as u32 % w, i as u32 / w))
            .collect()
    }

    pub fn object(&self, name: &str) -> Option<&ObjectPose> {
        self.objects.iter().find(|o| o.name == name)
    }
}
