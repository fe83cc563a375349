//! Choosing where the model runs: `auto` picks the best device this build can open and says why.

use candle_core::Device;

use super::ModelError;

/// Devices a user can ask for.
pub const DEVICE_NAMES: [&str; 4] = ["auto", "cpu", "cuda", "metal"];

/// Opens the device called `name`; returns it with a one-line note of what was picked and why.
pub fn select_device(name: &str) -> Result<(Device, String), ModelError> {
    let open_error = |name: &str, e: candle_core::Error| ModelError::Device {
        device: name.to_owned(),
        reason: e.to_string(),
    };
    match name {
        "cpu" => Ok((Device::Cpu, "device: CPU (requested)".to_owned())),
        "cuda" => Device::new_cuda(0)
            .map(|d| (d, "device: CUDA GPU 0 (requested)".to_owned()))
            .map_err(|e| open_error("cuda", e)),
        "metal" => Device::new_metal(0)
            .map(|d| (d, "device: Metal GPU 0 (requested)".to_owned()))
            .map_err(|e| open_error("metal", e)),
        "auto" => {
            if cfg!(feature = "cuda") {
                match Device::new_cuda(0) {
                    Ok(d) => {
                        return Ok((
                            d,
                            "device: CUDA GPU 0 (auto: this build has CUDA and a GPU opened)"
                                .to_owned(),
                        ));
                    }
                    Err(e) => {
                        return Ok((
                            Device::Cpu,
                            format!("device: CPU (auto: CUDA GPU could not be opened: {e})"),
                        ));
                    }
                }
            }
            if cfg!(feature = "metal")
                && let Ok(d) = Device::new_metal(0)
            {
                return Ok((d, "device: Metal GPU 0 (auto)".to_owned()));
            }
            Ok((
                Device::Cpu,
                "device: CPU (auto: this build has no GPU support)".to_owned(),
            ))
        }
        other => Err(ModelError::Device {
            device: other.to_owned(),
            reason: format!("unknown device (valid: {})", DEVICE_NAMES.join(", ")),
        }),
    }
}

/// A short human name of a device.
pub fn device_label(device: &Device) -> &'static str {
    match device {
        Device::Cpu => "CPU",
        Device::Cuda(_) => "CUDA",
        Device::Metal(_) => "Metal",
    }
}
