//! Choosing where the model runs: `auto` picks the best device this build can open and says why.

use candle_core::Device;

use super::ModelError;

/// Devices a user can ask for.
pub const DEVICE_NAMES: [&str; 4] = ["auto", "cpu", "cuda", "metal"];

/// Opens the device called `name`; returns it with a one-line note of what was picked and why.
pub fn select_device(name: &str) -> Result<(Device, String), ModelError> {
    let open_error = |name: &str, e: candle_core::Error| ModelError::Device {
        device: name.to_owned(),
        reason: first_line(&e),
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
                            format!(
                                "device: CPU (auto: CUDA GPU could not be opened: {})",
                                first_line(&e)
                            ),
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

/// candle appends a backtrace to driver errors; users need the first line only.
fn first_line(e: &candle_core::Error) -> String {
    e.to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// A short human name of a device.
pub fn device_label(device: &Device) -> &'static str {
    match device {
        Device::Cpu => "CPU",
        Device::Cuda(_) => "CUDA",
        Device::Metal(_) => "Metal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_always_gives_a_device_and_says_why() {
        let (device, note) = select_device("auto").expect("auto never fails");
        assert!(note.starts_with("device: "), "{note}");
        assert!(note.contains("auto"), "{note}");
        assert_eq!(note.lines().count(), 1, "one line, no backtrace: {note}");
        if !cfg!(any(feature = "cuda", feature = "metal")) {
            assert!(device.is_cpu());
        }
        // A CUDA build without a usable GPU (here: the toolkit's stub libcuda) runs on the
        // CPU and says why.
        if cfg!(feature = "cuda") && Device::new_cuda(0).is_err() {
            assert!(device.is_cpu());
            assert!(note.contains("CUDA GPU could not be opened"), "{note}");
        }
    }

    #[test]
    fn unknown_and_unavailable_devices_are_one_line_errors() {
        let err = select_device("tpu").expect_err("unknown");
        assert!(
            err.to_string().contains("valid: auto, cpu, cuda, metal"),
            "{err}"
        );
        if !cfg!(feature = "cuda") {
            let err = select_device("cuda").expect_err("no CUDA in this build");
            assert_eq!(err.to_string().lines().count(), 1, "{err}");
            assert!(err.to_string().contains("cuda"), "{err}");
        }
    }
}
