//! Loading U-Net weights from `.safetensors` or PyTorch `.pt/.pth` zip pickles (read as data,
//! no code runs). Reference checkpoints nest the U-Net under wrapper prefixes and carry the
//! diffusion buffers; both are handled here. Every tensor is checked against the names and
//! shapes the network asks for before the network is built, and all differences are reported
//! at once.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

use super::config::UNetConfig;
use super::error::{ModelError, ShapeMismatch};
use super::unet::UNet;

/// Prefixes under which the U-Net's keys appear, in order of preference (EMA weights first).
pub const UNET_PREFIXES: [&str; 5] = [
    "ema.ema_model.model.unet.",
    "ema_model.model.unet.",
    "model.unet.",
    "unet.",
    "",
];

/// Wrapper prefixes in front of the diffusion buffers and bookkeeping entries.
const WRAPPER_PREFIXES: [&str; 5] = ["ema.ema_model.", "ema_model.", "ema.", "model.", ""];

/// `GoalGaussianDiffusion` buffers and `ema_pytorch` bookkeeping: not network weights.
const IGNORED_ENTRIES: [&str; 15] = [
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "loss_weight",
    "initted",
    "step",
];

/// A tensor every U-Net has: the prefix it appears under is the U-Net's prefix.
const PROBE: &str = "time_embed.0.weight";

fn is_ignored(name: &str) -> bool {
    WRAPPER_PREFIXES.iter().any(|prefix| {
        name.strip_prefix(prefix)
            .is_some_and(|rest| IGNORED_ENTRIES.contains(&rest))
    })
}

/// The U-Net tensors of one checkpoint file, keyed by `UNetModel` attribute path.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    tensors: HashMap<String, Tensor>,
    unknown: Vec<String>,
    path: PathBuf,
}

impl Checkpoint {
    /// Reads a checkpoint, telling the formats apart by content (a zip is a PyTorch pickle).
    pub fn read(path: impl AsRef<Path>) -> Result<Self, ModelError> {
        let path = path.as_ref().to_path_buf();
        let format_error = |reason: String| ModelError::Format {
            reason,
            path: path.clone(),
        };
        let mut magic = [0u8; 4];
        let mut file = std::fs::File::open(&path).map_err(|source| ModelError::Io {
            source,
            path: path.clone(),
        })?;
        let read = file.read(&mut magic).map_err(|source| ModelError::Io {
            source,
            path: path.clone(),
        })?;
        let is_zip = read == magic.len() && magic == *b"PK\x03\x04";
        let entries = if is_zip {
            super::torch_zip::read(&path).map_err(|e| format_error(format!("PyTorch zip: {e}")))?
        } else {
            candle_core::safetensors::load(&path, &Device::Cpu)
                .map_err(|e| format_error(format!("safetensors: {e}")))?
        };
        Self::from_entries(entries, path)
    }

    /// Picks the preferred U-Net prefix and strips it; other U-Net copies and the diffusion
    /// buffers are dropped, anything else is kept as unknown.
    fn from_entries(entries: HashMap<String, Tensor>, path: PathBuf) -> Result<Self, ModelError> {
        let Some(prefix) = UNET_PREFIXES
            .iter()
            .find(|prefix| entries.contains_key(&format!("{prefix}{PROBE}")))
        else {
            return Err(ModelError::NoUnetTensors {
                prefixes: UNET_PREFIXES.map(|p| format!("`{p}{PROBE}`")).join(", "),
                path,
            });
        };
        let is_other_copy = |name: &str| {
            UNET_PREFIXES
                .iter()
                .chain(&["online_model."])
                .any(|p| !p.is_empty() && p != prefix && name.starts_with(p))
        };
        let mut tensors = HashMap::new();
        let mut unknown = Vec::new();
        for (name, tensor) in entries {
            if is_ignored(&name) || (prefix.is_empty() && is_other_copy(&name)) {
                continue;
            }
            match name.strip_prefix(prefix) {
                Some(stripped) => {
                    tensors.insert(stripped.to_string(), tensor);
                }
                None if is_other_copy(&name) => {}
                None => unknown.push(name),
            }
        }
        Ok(Self {
            tensors,
            unknown,
            path,
        })
    }

    /// The U-Net tensors, named without prefix.
    pub fn tensors(&self) -> &HashMap<String, Tensor> {
        &self.tensors
    }

    /// The file the tensors came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensor shapes by name, the input of [`UNetConfig::infer_from_tensors`].
    pub fn shapes(&self) -> HashMap<String, Vec<usize>> {
        self.tensors
            .iter()
            .map(|(name, t)| (name.clone(), t.dims().to_vec()))
            .collect()
    }

    /// Derives the network config from the shapes; see [`UNetConfig::infer_from_tensors`].
    pub fn infer_config(
        &self,
        image_size: (usize, usize),
        num_head_channels: usize,
    ) -> Result<UNetConfig, ModelError> {
        UNetConfig::infer_from_tensors(&self.shapes(), image_size, num_head_channels)
    }

    /// Checks that the tensors are exactly those `cfg`'s network reads, with the right shapes.
    pub fn validate(&self, cfg: &UNetConfig) -> Result<(), ModelError> {
        let expected = expected_shapes(cfg)?;
        let missing: Vec<String> = expected
            .keys()
            .filter(|name| !self.tensors.contains_key(*name))
            .cloned()
            .collect();
        let mut unknown: Vec<String> = self
            .tensors
            .keys()
            .filter(|name| !expected.contains_key(*name))
            .cloned()
            .chain(self.unknown.iter().cloned())
            .collect();
        unknown.sort();
        let mis_shaped: Vec<ShapeMismatch> = expected
            .iter()
            .filter_map(|(name, shape)| {
                let found = self.tensors.get(name)?.dims();
                (found != shape.as_slice()).then(|| ShapeMismatch {
                    name: name.clone(),
                    expected: shape.clone(),
                    found: found.to_vec(),
                })
            })
            .collect();
        if missing.is_empty() && unknown.is_empty() && mis_shaped.is_empty() {
            Ok(())
        } else {
            Err(ModelError::Mismatch {
                missing,
                unknown,
                mis_shaped,
                path: self.path.clone(),
            })
        }
    }

    /// Validates, then builds the network on `device` in float32.
    pub fn into_unet(self, cfg: &UNetConfig, device: &Device) -> Result<UNet, ModelError> {
        self.into_unet_as(cfg, device, DType::F32)
    }

    /// Validates, then builds the network on `device` with weights of type `dtype`.
    pub fn into_unet_as(
        self,
        cfg: &UNetConfig,
        device: &Device,
        dtype: DType,
    ) -> Result<UNet, ModelError> {
        self.validate(cfg)?;
        let vb = VarBuilder::from_tensors(self.tensors, dtype, device);
        Ok(UNet::new(cfg, vb)?)
    }
}

/// Reads a checkpoint and builds the network described by `cfg` from it.
pub fn load_unet(
    path: impl AsRef<Path>,
    cfg: &UNetConfig,
    device: &Device,
) -> Result<UNet, ModelError> {
    Checkpoint::read(path)?.into_unet(cfg, device)
}

/// Every parameter name and shape the network of `cfg` reads, found by building it once
/// against a backend that records requests and hands out unallocated (broadcast) zeros.
pub fn expected_shapes(cfg: &UNetConfig) -> Result<BTreeMap<String, Vec<usize>>, ModelError> {
    let recorder = ShapeRecorder::default();
    let vb = VarBuilder::from_backend(Box::new(recorder.clone()), DType::F32, Device::Cpu);
    UNet::new(cfg, vb)?;
    let shapes = recorder
        .0
        .lock()
        .map_err(|_| candle_core::Error::Msg("shape recorder lock poisoned".into()))?
        .clone();
    Ok(shapes)
}

#[derive(Clone, Default)]
struct ShapeRecorder(Arc<Mutex<BTreeMap<String, Vec<usize>>>>);

impl SimpleBackend for ShapeRecorder {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.0
            .lock()
            .map_err(|_| candle_core::Error::Msg("shape recorder lock poisoned".into()))?
            .insert(name.to_string(), s.dims().to_vec());
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("shape recorder cannot produce `{name}` without a shape")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use candle_nn::VarMap;

    use super::*;

    /// The tensors of a freshly initialised tiny network, keyed like a VarMap save.
    fn tiny_tensors(cfg: &UNetConfig) -> HashMap<String, Tensor> {
        let varmap = VarMap::new();
        UNet::new(
            cfg,
            VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        )
        .expect("tiny network builds");
        let data = varmap.data().lock().expect("varmap lock");
        data.iter()
            .map(|(name, var)| (name.clone(), var.as_tensor().clone()))
            .collect()
    }

    fn save(tensors: &HashMap<String, Tensor>, dir: &tempfile::TempDir, name: &str) -> PathBuf {
        let path = dir.path().join(name);
        candle_core::safetensors::save(tensors, &path).expect("save safetensors");
        path
    }

    #[test]
    fn loads_with_any_known_prefix_and_ignores_buffers() {
        let cfg = UNetConfig::tiny();
        let dir = tempfile::tempdir().expect("temp dir");
        for prefix in UNET_PREFIXES {
            let mut tensors: HashMap<String, Tensor> = tiny_tensors(&cfg)
                .into_iter()
                .map(|(name, t)| (format!("{prefix}{name}"), t))
                .collect();
            let buffer = Tensor::zeros(100, DType::F32, &Device::Cpu).expect("buffer");
            tensors.insert("model.betas".into(), buffer.clone());
            tensors.insert("alphas_cumprod".into(), buffer);
            let path = save(&tensors, &dir, "prefixed.safetensors");
            let result = load_unet(&path, &cfg, &Device::Cpu);
            assert!(result.is_ok(), "prefix `{prefix}`: {:?}", result.err());
        }
    }

    #[test]
    fn lists_missing_unknown_and_mis_shaped_tensors() {
        let cfg = UNetConfig::tiny();
        let mut tensors = tiny_tensors(&cfg);
        tensors.remove("out.0.bias");
        tensors.insert(
            "extra.weight".into(),
            Tensor::zeros(3, DType::F32, &Device::Cpu).expect("zeros"),
        );
        tensors.insert(
            "time_embed.2.bias".into(),
            Tensor::zeros(7, DType::F32, &Device::Cpu).expect("zeros"),
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let path = save(&tensors, &dir, "bad.safetensors");
        let err = load_unet(&path, &cfg, &Device::Cpu).expect_err("mismatch");
        let ModelError::Mismatch {
            missing,
            unknown,
            mis_shaped,
            ..
        } = &err
        else {
            panic!("expected a mismatch, got {err}");
        };
        assert_eq!(missing, &["out.0.bias"]);
        assert_eq!(unknown, &["extra.weight"]);
        assert_eq!(
            mis_shaped,
            &[ShapeMismatch {
                name: "time_embed.2.bias".into(),
                expected: vec![128],
                found: vec![7],
            }]
        );
        let message = err.to_string();
        for needle in [
            "out.0.bias",
            "extra.weight",
            "time_embed.2.bias expected [128] found [7]",
        ] {
            assert!(message.contains(needle), "`{needle}` not in: {message}");
        }
        assert!(
            message.ends_with(&path.display().to_string()),
            "path not last: {message}"
        );
    }

    #[test]
    fn corrupt_files_are_errors_naming_the_file() {
        let cfg = UNetConfig::tiny();
        let dir = tempfile::tempdir().expect("temp dir");
        let good = save(&tiny_tensors(&cfg), &dir, "good.safetensors");
        let bytes = std::fs::read(&good).expect("read back");
        let cases: [(&str, &[u8]); 4] = [
            ("truncated.safetensors", &bytes[..bytes.len() / 2]),
            ("garbage.bin", b"this is not a checkpoint at all"),
            ("truncated.pt", b"PK\x03\x04 and then the zip ends"),
            ("empty.safetensors", b""),
        ];
        for (name, content) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, content).expect("write case");
            let err = Checkpoint::read(&path).expect_err(name);
            assert!(matches!(err, ModelError::Format { .. }), "{name}: {err}");
            assert!(
                err.to_string().ends_with(&path.display().to_string()),
                "{name}: {err}"
            );
        }
        let missing = dir.path().join("missing.pt");
        let err = Checkpoint::read(&missing).expect_err("missing file");
        assert!(matches!(err, ModelError::Io { .. }), "{err}");
    }

    #[test]
    fn files_without_unet_tensors_are_rejected() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut tensors = HashMap::new();
        tensors.insert(
            "betas".to_string(),
            Tensor::zeros(4, DType::F32, &Device::Cpu).expect("zeros"),
        );
        let path = save(&tensors, &dir, "buffers.safetensors");
        let err = Checkpoint::read(&path).expect_err("no unet");
        assert!(matches!(err, ModelError::NoUnetTensors { .. }), "{err}");
    }
}
