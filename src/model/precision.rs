//! Numeric precision of the U-Net: `f32` everywhere (the reference's default), `tf32` (f32
//! tensors, matrix products on NVIDIA tensor cores with 10-bit mantissa inputs) or `bf16`
//! (weights and activations in bfloat16; group norms and softmax in f32, as the reference's
//! `GroupNorm32` and attention do). The sampler, the schedule and the text encoder stay f32:
//! the U-Net casts its inputs to its weights' type and its output back.

use candle_core::{DType, Device};

use super::ModelError;

/// The precisions a user can ask for.
pub const PRECISION_NAMES: [&str; 3] = ["f32", "tf32", "bf16"];

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    Tf32,
    Bf16,
}

impl Precision {
    pub fn parse(name: &str) -> Result<Self, ModelError> {
        match name {
            "f32" => Ok(Self::F32),
            "tf32" => Ok(Self::Tf32),
            "bf16" => Ok(Self::Bf16),
            other => Err(ModelError::Precision {
                precision: other.to_owned(),
                reason: format!("unknown precision (valid: {})", PRECISION_NAMES.join(", ")),
            }),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Tf32 => "tf32",
            Self::Bf16 => "bf16",
        }
    }

    /// The type of the U-Net's weights and activations.
    pub fn dtype(self) -> DType {
        match self {
            Self::Bf16 => DType::BF16,
            Self::F32 | Self::Tf32 => DType::F32,
        }
    }

    /// Applies the process-wide part (TF32 is a switch of candle's cuBLAS calls, for every
    /// f32 matrix product in this process) and says what it means on `device`.
    pub fn apply(self, device: &Device) -> String {
        candle_core::cuda::set_gemm_reduced_precision_f32(self == Self::Tf32);
        match (self, device.is_cuda()) {
            (Self::Tf32, false) => {
                "precision: tf32 asked for, but TF32 exists only on NVIDIA GPUs: f32".to_owned()
            }
            (p, _) => format!("precision: {}", p.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for name in PRECISION_NAMES {
            assert_eq!(Precision::parse(name).expect("known").name(), name);
        }
        let e = Precision::parse("fp8").expect_err("unknown");
        assert!(e.to_string().contains("f32, tf32, bf16"), "{e}");
        assert!(
            Precision::Tf32
                .apply(&Device::Cpu)
                .contains("only on NVIDIA")
        );
        assert_eq!(Precision::F32.apply(&Device::Cpu), "precision: f32");
    }
}
