//! The new classification head put on top of a backbone: dropout → (optional hidden layer
//! with ReLU → dropout) → linear, initialised from a seeded RNG, and the loss it trains on
//! (cross-entropy with label smoothing and optional class weights).

use candle_core::{DType, Device, Result, Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::artifact::tensor_names::{HEAD_BIAS, HEAD_HIDDEN_BIAS, HEAD_HIDDEN_WEIGHT, HEAD_WEIGHT};

/// A trainable head. Its weights are `Var`s; `named_tensors` saves them.
pub struct Head {
    hidden: Option<(Var, Var)>,
    weight: Var,
    bias: Var,
    pub dropout: f32,
    rng: std::sync::Mutex<StdRng>,
}

fn uniform_var(rows: usize, cols: usize, rng: &mut StdRng, device: &Device) -> Result<Var> {
    // Kaiming-uniform-like bound as in torch's nn.Linear.
    let bound = 1.0 / (cols as f32).sqrt();
    let data: Vec<f32> = (0..rows * cols)
        .map(|_| rng.random_range(-bound..bound))
        .collect();
    Var::from_tensor(&Tensor::from_vec(data, (rows, cols), device)?)
}

impl Head {
    /// A fresh head mapping `dim` features to `classes` logits.
    pub fn new(
        dim: usize,
        classes: usize,
        hidden: usize,
        dropout: f32,
        seed: u64,
        device: &Device,
    ) -> Result<Head> {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x4EAD);
        let (hidden, in_dim) = if hidden > 0 {
            let w = uniform_var(hidden, dim, &mut rng, device)?;
            let b = Var::zeros(hidden, DType::F32, device)?;
            (Some((w, b)), hidden)
        } else {
            (None, dim)
        };
        // The output layer starts at zero: every class equally likely, no random bias.
        let weight = Var::zeros((classes, in_dim), DType::F32, device)?;
        let bias = Var::zeros(classes, DType::F32, device)?;
        Ok(Head {
            hidden,
            weight,
            bias,
            dropout,
            rng: std::sync::Mutex::new(StdRng::seed_from_u64(seed ^ 0xD120)),
        })
    }

    /// Rebuilds a head from saved tensors (`head.weight`, `head.bias`, optionally
    /// `head.hidden.weight`, `head.hidden.bias`).
    pub fn from_tensors(get: impl Fn(&str) -> Option<Tensor>, dropout: f32) -> Result<Head> {
        let need = |name: &str| {
            get(name).ok_or_else(|| candle_core::Error::Msg(format!("missing tensor {name}")))
        };
        let hidden = match (get(HEAD_HIDDEN_WEIGHT), get(HEAD_HIDDEN_BIAS)) {
            (Some(w), Some(b)) => Some((Var::from_tensor(&w)?, Var::from_tensor(&b)?)),
            _ => None,
        };
        Ok(Head {
            hidden,
            weight: Var::from_tensor(&need(HEAD_WEIGHT)?)?,
            bias: Var::from_tensor(&need(HEAD_BIAS)?)?,
            dropout,
            rng: std::sync::Mutex::new(StdRng::seed_from_u64(0)),
        })
    }

    /// A linear head (no hidden layer) with the given weights `[classes, dim]` and bias.
    pub fn from_linear(weight: &Tensor, bias: &Tensor, dropout: f32, seed: u64) -> Result<Head> {
        Ok(Head {
            hidden: None,
            weight: Var::from_tensor(weight)?,
            bias: Var::from_tensor(bias)?,
            dropout,
            rng: std::sync::Mutex::new(StdRng::seed_from_u64(seed ^ 0xD120)),
        })
    }

    pub fn num_classes(&self) -> usize {
        self.bias.dims()[0]
    }

    pub fn vars(&self) -> Vec<Var> {
        let mut v = Vec::new();
        if let Some((w, b)) = &self.hidden {
            v.push(w.clone());
            v.push(b.clone());
        }
        v.push(self.weight.clone());
        v.push(self.bias.clone());
        v
    }

    /// Vars that weight decay / L1 apply to (matrices, not biases).
    pub fn weight_vars(&self) -> Vec<Var> {
        let mut v = vec![self.weight.clone()];
        if let Some((w, _)) = &self.hidden {
            v.push(w.clone());
        }
        v
    }

    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![
            (HEAD_WEIGHT.to_string(), self.weight.as_tensor().clone()),
            (HEAD_BIAS.to_string(), self.bias.as_tensor().clone()),
        ];
        if let Some((w, b)) = &self.hidden {
            out.push((HEAD_HIDDEN_WEIGHT.into(), w.as_tensor().clone()));
            out.push((HEAD_HIDDEN_BIAS.into(), b.as_tensor().clone()));
        }
        out
    }

    /// Copies of the current weights (for restoring the best checkpoint).
    pub fn snapshot(&self) -> Result<Vec<Tensor>> {
        self.vars().iter().map(|v| v.as_tensor().copy()).collect()
    }

    pub fn restore(&self, snapshot: &[Tensor]) -> Result<()> {
        for (v, t) in self.vars().iter().zip(snapshot) {
            v.set(t)?;
        }
        Ok(())
    }

    fn dropout(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !train || self.dropout <= 0.0 {
            return Ok(x.clone());
        }
        let p = self.dropout;
        let keep = 1.0 / (1.0 - p);
        let mask: Vec<f32> = {
            let mut rng = self.rng.lock().expect("head rng lock");
            (0..x.elem_count())
                .map(|_| if rng.random::<f32>() < p { 0.0 } else { keep })
                .collect()
        };
        x.mul(&Tensor::from_vec(mask, x.shape(), x.device())?)
    }

    /// Logits `[B, classes]` for features `[B, dim]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = self.dropout(x, train)?;
        if let Some((w, b)) = &self.hidden {
            h = h
                .matmul(&w.as_tensor().t()?)?
                .broadcast_add(b.as_tensor())?
                .relu()?;
            h = self.dropout(&h, train)?;
        }
        h.matmul(&self.weight.as_tensor().t()?)?
            .broadcast_add(self.bias.as_tensor())
    }
}

/// Soft targets `[B, C]` for cross-entropy: label smoothing mixes each one-hot row with the
/// uniform distribution; class weights scale each row by its class's weight.
pub fn soft_targets(
    labels: &[usize],
    classes: usize,
    smoothing: f32,
    class_weights: Option<&[f32]>,
    device: &Device,
) -> Result<Tensor> {
    let off = smoothing / classes as f32;
    let mut data = vec![off; labels.len() * classes];
    for (i, &l) in labels.iter().enumerate() {
        data[i * classes + l] += 1.0 - smoothing;
        if let Some(w) = class_weights {
            for v in &mut data[i * classes..(i + 1) * classes] {
                *v *= w[l];
            }
        }
    }
    Tensor::from_vec(data, (labels.len(), classes), device)
}

/// Weighted mean cross-entropy between logits and soft targets. Each row's weight is its
/// target row's sum, so class weights need no extra argument.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let log_p = candle_nn::ops::log_softmax(logits, 1)?;
    let total_weight = targets.sum_all()?.to_scalar::<f32>()?;
    let per_row_smoothing_free = (targets * log_p)?.sum_all()?.neg()?;
    // Targets rows sum to the class weight, so dividing by their total gives a weighted mean.
    per_row_smoothing_free.affine(1.0 / total_weight.max(1e-12) as f64, 0.0)
}

/// "balanced" class weights: n / (k · n_c), normalised to mean 1 over the examples.
pub fn balanced_class_weights(labels: &[usize], classes: usize) -> Vec<f32> {
    let mut counts = vec![0usize; classes];
    for &l in labels {
        counts[l] += 1;
    }
    let n = labels.len() as f32;
    counts
        .iter()
        .map(|&c| {
            if c == 0 {
                0.0
            } else {
                n / (classes as f32 * c as f32)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_entropy_matches_hand_computation() -> Result<()> {
        let dev = Device::Cpu;
        let logits = Tensor::new(&[[2.0f32, 0.0], [0.0, 1.0]], &dev)?;
        let t = soft_targets(&[0, 1], 2, 0.0, None, &dev)?;
        let loss = cross_entropy(&logits, &t)?.to_scalar::<f32>()?;
        let p0 = (2f32.exp() / (2f32.exp() + 1.0)).ln();
        let p1 = (1f32.exp() / (1.0 + 1f32.exp())).ln();
        assert!((loss + (p0 + p1) / 2.0).abs() < 1e-6);
        Ok(())
    }

    #[test]
    fn smoothing_and_weights_shape_targets() -> Result<()> {
        let t = soft_targets(&[1], 4, 0.2, Some(&[1.0, 2.0, 1.0, 1.0]), &Device::Cpu)?;
        let row = t.to_vec2::<f32>()?[0].clone();
        assert!((row[1] - 2.0 * 0.85).abs() < 1e-6 && (row[0] - 2.0 * 0.05).abs() < 1e-6);
        assert_eq!(
            balanced_class_weights(&[0, 0, 0, 1], 2),
            vec![4.0 / 6.0, 2.0]
        );
        Ok(())
    }

    #[test]
    fn every_head_var_gets_a_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let head = Head::new(6, 3, 5, 0.0, 1, &dev)?;
        // Zero-initialised output layer: give it values so the hidden layer sees gradient.
        head.weight.set(
            &Tensor::arange(0f32, 15., &dev)?
                .reshape((3, 5))?
                .affine(0.1, -0.5)?,
        )?;
        let x = Tensor::new(
            &[[1f32, -2., 3., 0.5, 1., 2.], [0.1, 0.2, -0.3, 1., 1., 1.]],
            &dev,
        )?;
        let t = soft_targets(&[0, 2], 3, 0.1, None, &dev)?;
        let grads = cross_entropy(&head.forward(&x, true)?, &t)?.backward()?;
        for v in head.vars() {
            let g = grads.get(&v).expect("gradient");
            assert!(g.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0);
        }
        Ok(())
    }
}
