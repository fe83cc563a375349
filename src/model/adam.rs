//! Adam with global-norm gradient clipping and an exponential moving average of the weights,
//! both with state that can be saved and restored exactly (candle's `AdamW` keeps its moments
//! private, so a resumed run could not continue the same curve).

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Clip the global gradient norm to this (the reference: 1.0).
    pub max_grad_norm: f64,
    /// The learning rate rises linearly to `lr` over this many steps (0: none). Fine-tuning
    /// starts with empty moments, whose first updates are full-size whatever the gradient.
    #[serde(default)]
    pub warmup_steps: u64,
}

impl AdamConfig {
    /// The learning rate of update `step` (1-based).
    pub fn lr_at(&self, step: u64) -> f64 {
        if step >= self.warmup_steps {
            self.lr
        } else {
            self.lr * step as f64 / self.warmup_steps as f64
        }
    }
}

impl Default for AdamConfig {
    /// The reference trainer's settings (lr 1e-4, betas (0.9, 0.99), clip 1).
    fn default() -> Self {
        Self {
            lr: 1e-4,
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            max_grad_norm: 1.0,
            warmup_steps: 0,
        }
    }
}

/// Adam over named variables.
pub struct Adam {
    cfg: AdamConfig,
    vars: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    step: u64,
}

impl Adam {
    /// `vars` sorted by name so the state layout is stable.
    pub fn new(mut vars: Vec<(String, Var)>, cfg: AdamConfig) -> Result<Self> {
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let m = vars
            .iter()
            .map(|(_, v)| v.zeros_like())
            .collect::<Result<Vec<_>>>()?;
        let v = m.clone();
        Ok(Self {
            cfg,
            vars,
            m,
            v,
            step: 0,
        })
    }

    /// Clips the gradients to the configured global norm and applies one update.
    /// Returns the gradient norm before clipping.
    pub fn step(&mut self, grads: &GradStore) -> Result<f64> {
        // One device-to-host copy for the whole norm (one per variable stalls a GPU).
        let squares = self
            .vars
            .iter()
            .filter_map(|(_, var)| grads.get(var))
            .map(|g| g.sqr()?.sum_all())
            .collect::<Result<Vec<_>>>()?;
        let norm = if squares.is_empty() {
            0.0
        } else {
            f64::from(Tensor::stack(&squares, 0)?.sum_all()?.to_scalar::<f32>()?).sqrt()
        };
        let scale = if norm > self.cfg.max_grad_norm {
            self.cfg.max_grad_norm / (norm + 1e-6)
        } else {
            1.0
        };
        self.step += 1;
        let c = &self.cfg;
        let t = self.step as i32;
        let bias1 = 1.0 - c.beta1.powi(t);
        let bias2 = 1.0 - c.beta2.powi(t);
        let lr = c.lr_at(self.step);
        for (i, (_, var)) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var) else { continue };
            // Detached: a gradient still links to the step's whole graph, and the moments
            // would keep every past step's activations alive.
            let g = (g.detach() * scale)?;
            self.m[i] = ((&self.m[i] * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            self.v[i] = ((&self.v[i] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let m_hat = (&self.m[i] / bias1)?;
            let v_hat = (&self.v[i] / bias2)?;
            let update = (m_hat / (v_hat.sqrt()? + c.eps)?)?;
            var.set(&(var.as_tensor() - (update * lr)?)?)?;
        }
        Ok(norm)
    }

    /// Moments as named tensors (`adam.m.<name>`, `adam.v.<name>`).
    pub fn state(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (i, (name, _)) in self.vars.iter().enumerate() {
            out.insert(format!("adam.m.{name}"), self.m[i].clone());
            out.insert(format!("adam.v.{name}"), self.v[i].clone());
        }
        out
    }

    /// Restores moments saved by [`Adam::state`] after `steps` updates.
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>, steps: u64) -> Result<()> {
        for (i, (name, var)) in self.vars.iter().enumerate() {
            for (kind, slot) in [("m", &mut self.m[i]), ("v", &mut self.v[i])] {
                let key = format!("adam.{kind}.{name}");
                let t = state.get(&key).ok_or_else(|| {
                    candle_core::Error::Msg(format!("optimizer state lacks {key}"))
                })?;
                *slot = t.to_device(var.device())?.reshape(var.shape())?;
            }
        }
        self.step = steps;
        Ok(())
    }
}

/// Exponential moving average of variables: `ema = decay * ema + (1 - decay) * param`.
pub struct Ema {
    decay: f64,
    shadow: Vec<(String, Tensor)>,
}

impl Ema {
    pub fn new(vars: &[(String, Var)], decay: f64) -> Result<Self> {
        let shadow = vars
            .iter()
            // `copy` records an op on the variable; detached, the averages form no graph (otherwise
            // every update would keep the previous averages alive: ~50 MB a step here).
            .map(|(n, v)| Ok((n.clone(), v.as_tensor().copy()?.detach())))
            .collect::<Result<_>>()?;
        Ok(Self { decay, shadow })
    }

    pub fn update(&mut self, vars: &[(String, Var)]) -> Result<()> {
        for ((_, s), (_, v)) in self.shadow.iter_mut().zip(vars) {
            *s = ((&*s * self.decay)? + (v.as_tensor().detach() * (1.0 - self.decay))?)?;
        }
        Ok(())
    }

    pub fn tensors(&self) -> &[(String, Tensor)] {
        &self.shadow
    }

    /// Replaces the averages with saved ones (`ema.<name>` keys are accepted too).
    pub fn load(&mut self, saved: &HashMap<String, Tensor>) -> Result<()> {
        for (name, s) in &mut self.shadow {
            let t = saved
                .get(&format!("ema.{name}"))
                .ok_or_else(|| candle_core::Error::Msg(format!("EMA state lacks {name}")))?;
            *s = t.to_device(s.device())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn adam_minimises_a_quadratic_and_clips() -> Result<()> {
        let x = Var::from_slice(&[3f32, -2.0], 2, &Device::Cpu)?;
        let cfg = AdamConfig {
            lr: 0.1,
            ..AdamConfig::default()
        };
        let mut adam = Adam::new(vec![("x".into(), x.clone())], cfg)?;
        let mut first_norm = 0.0;
        for i in 0..300 {
            let loss = x.as_tensor().sqr()?.sum_all()?;
            let norm = adam.step(&loss.backward()?)?;
            if i == 0 {
                first_norm = norm;
            }
        }
        assert!((first_norm - (36f64 + 16.0).sqrt()).abs() < 1e-4);
        let v = x.as_tensor().to_vec1::<f32>()?;
        assert!(v.iter().all(|a| a.abs() < 0.05), "{v:?}");
        Ok(())
    }

    #[test]
    fn warm_up_scales_the_first_updates() -> Result<()> {
        let x = Var::from_slice(&[1f32], 1, &Device::Cpu)?;
        let cfg = AdamConfig {
            lr: 0.1,
            warmup_steps: 4,
            ..AdamConfig::default()
        };
        let mut adam = Adam::new(vec![("x".into(), x.clone())], cfg)?;
        let mut moved = Vec::new();
        for _ in 0..5 {
            let before = x.as_tensor().to_vec1::<f32>()?[0];
            // d(x)/dx = 1: Adam's normalised update is 1 each step.
            adam.step(&x.as_tensor().sum_all()?.backward()?)?;
            moved.push(before - x.as_tensor().to_vec1::<f32>()?[0]);
        }
        for (got, want) in moved.iter().zip([0.025, 0.05, 0.075, 0.1, 0.1]) {
            assert!((got - want).abs() < 1e-5, "{moved:?}");
        }
        assert_eq!(AdamConfig::default().lr_at(1), AdamConfig::default().lr);
        Ok(())
    }
}
