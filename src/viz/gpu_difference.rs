//! The difference heatmap on the GPU: `shaders/difference.wgsl` as a wgpu compute pass. The
//! studio hands it the device eframe already opened; headless code can open one itself.
//! [`super::difference_heatmap`] is the CPU path and the reference this must match.

use wgpu::util::DeviceExt;

use crate::env::Rgb8Image;

const SHADER: &str = include_str!("../../shaders/difference.wgsl");
const WORKGROUP: u32 = 64;

/// Why the GPU path is unavailable or failed (the caller falls back to the CPU).
#[derive(Debug, thiserror::Error)]
pub enum GpuDifferenceError {
    #[error("no GPU adapter: {0}")]
    NoAdapter(String),
    #[error("the GPU device could not be opened: {0}")]
    Device(String),
    #[error("frames differ in size: {a:?} vs {b:?}")]
    SizeMismatch { a: (u32, u32), b: (u32, u32) },
    #[error("reading the result back failed: {0}")]
    Readback(String),
}

/// A compiled difference pipeline on one device.
pub struct GpuDifference {
    device: wgpu::Device,
    queue: wgpu::Queue,
    pipeline: wgpu::ComputePipeline,
    adapter_name: String,
}

impl GpuDifference {
    /// Opens the first available adapter (any backend, software ones included).
    pub fn open() -> Result<Self, GpuDifferenceError> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter =
            pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
                .map_err(|e| GpuDifferenceError::NoAdapter(e.to_string()))?;
        let name = adapter.get_info().name;
        let (device, queue) =
            pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default()))
                .map_err(|e| GpuDifferenceError::Device(e.to_string()))?;
        Ok(Self::new(device, queue, name))
    }

    /// Builds the pipeline on a device someone else opened (eframe's).
    pub fn new(device: wgpu::Device, queue: wgpu::Queue, adapter_name: String) -> Self {
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("difference.wgsl"),
            source: wgpu::ShaderSource::Wgsl(SHADER.into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("difference"),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: wgpu::PipelineCompilationOptions::default(),
            cache: None,
        });
        Self {
            device,
            queue,
            pipeline,
            adapter_name,
        }
    }

    pub fn adapter_name(&self) -> &str {
        &self.adapter_name
    }

    /// The heatmap of `a` against `b` (same size).
    pub fn heatmap(&self, a: &Rgb8Image, b: &Rgb8Image) -> Result<Rgb8Image, GpuDifferenceError> {
        if (a.width, a.height) != (b.width, b.height) {
            return Err(GpuDifferenceError::SizeMismatch {
                a: (a.width, a.height),
                b: (b.width, b.height),
            });
        }
        let pixels = a.width * a.height;
        let storage = |label: &str, image: &Rgb8Image| {
            self.device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(label),
                    contents: &pack_rgba(image),
                    usage: wgpu::BufferUsages::STORAGE,
                })
        };
        let (buf_a, buf_b) = (storage("frame a", a), storage("frame b", b));
        let size = u64::from(pixels) * 4;
        let out = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("heatmap"),
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let readback = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("heatmap readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let params = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: &[pixels.to_le_bytes(), [0; 4], [0; 4], [0; 4]].concat(),
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let layout = self.pipeline.get_bind_group_layout(0);
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("difference"),
            layout: &layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: buf_a.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: buf_b.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: out.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 3,
                    resource: params.as_entire_binding(),
                },
            ],
        });
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(pixels.div_ceil(WORKGROUP), 1, 1);
        }
        encoder.copy_buffer_to_buffer(&out, 0, &readback, 0, size);
        self.queue.submit([encoder.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        readback.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: None,
                timeout: Some(std::time::Duration::from_secs(5)),
            })
            .map_err(|e| GpuDifferenceError::Readback(e.to_string()))?;
        rx.recv()
            .map_err(|e| GpuDifferenceError::Readback(e.to_string()))?
            .map_err(|e| GpuDifferenceError::Readback(e.to_string()))?;
        let words = readback
            .get_mapped_range(..)
            .map_err(|e| GpuDifferenceError::Readback(e.to_string()))?
            .to_vec();
        readback.unmap();
        let pixels = words
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect();
        Ok(Rgb8Image {
            width: a.width,
            height: a.height,
            pixels,
        })
    }
}

fn pack_rgba(image: &Rgb8Image) -> Vec<u8> {
    image
        .pixels
        .chunks_exact(3)
        .flat_map(|p| [p[0], p[1], p[2], 255])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mesa's software Vulkan driver, which `.ci/run` installs.
    fn software_vulkan_installed() -> bool {
        std::fs::read_dir("/usr/share/vulkan/icd.d").is_ok_and(|dir| {
            dir.filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().starts_with("lvp_icd"))
        })
    }

    /// Runs wherever an adapter exists, and must where the software driver is installed (CI);
    /// elsewhere it says why it could not run.
    #[test]
    fn gpu_heatmap_matches_the_cpu_path() {
        let gpu = match GpuDifference::open() {
            Ok(gpu) => gpu,
            Err(e) => {
                assert!(
                    !software_vulkan_installed(),
                    "lavapipe is installed, yet: {e}"
                );
                eprintln!("skipped: {e}");
                return;
            }
        };
        let frame = |seed: u32| Rgb8Image {
            width: 13,
            height: 7,
            pixels: (0..13 * 7 * 3)
                .map(|i: u32| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 7) as u8)
                .collect(),
        };
        let (a, b) = (frame(1), frame(99));
        let gpu_map = gpu.heatmap(&a, &b).expect("gpu heatmap");
        let cpu_map = super::super::difference_heatmap(&a, &b);
        let worst = gpu_map
            .pixels
            .iter()
            .zip(&cpu_map.pixels)
            .map(|(g, c)| g.abs_diff(*c))
            .max()
            .unwrap_or(0);
        eprintln!(
            "{}: largest channel difference to the CPU path {worst}",
            gpu.adapter_name()
        );
        assert!(worst <= 1, "GPU and CPU heatmaps differ by {worst}");
    }
}
