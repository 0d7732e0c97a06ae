//! Optimisation: AdamW over parameter groups with their own learning rates (discriminative
//! rates: the backbone far below the head), no weight decay on biases and norms, and a
//! linear warm-up followed by cosine decay.

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};

/// A named group of variables trained at one base learning rate.
pub struct ParamGroup {
    pub name: &'static str,
    pub vars: Vec<Var>,
    pub lr: f64,
    pub weight_decay: f64,
}

/// AdamW per group; biases and 1-D weights (norm scales) are never decayed.
pub struct GroupedAdamW {
    groups: Vec<(AdamW, f64)>,
}

impl GroupedAdamW {
    pub fn new(groups: Vec<ParamGroup>) -> Result<Self> {
        let mut out = Vec::new();
        for g in groups {
            let (decayed, plain): (Vec<Var>, Vec<Var>) =
                g.vars.into_iter().partition(|v| v.rank() >= 2);
            for (vars, wd) in [(decayed, g.weight_decay), (plain, 0.0)] {
                if vars.is_empty() {
                    continue;
                }
                let params = ParamsAdamW {
                    lr: g.lr,
                    weight_decay: wd,
                    ..ParamsAdamW::default()
                };
                out.push((AdamW::new(vars, params)?, g.lr));
            }
        }
        Ok(GroupedAdamW { groups: out })
    }

    /// Sets every group's rate to its base rate times `factor` (from the schedule).
    pub fn set_lr_factor(&mut self, factor: f64) {
        for (opt, base) in &mut self.groups {
            opt.set_learning_rate(*base * factor);
        }
    }

    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        for (opt, _) in &mut self.groups {
            opt.step(grads)?;
        }
        Ok(())
    }
}

/// Learning-rate factor at `step` of `total`: linear warm-up over `warmup` steps, then
/// cosine decay to 5% of the base rate.
pub fn warmup_cosine(step: usize, total: usize, warmup: usize) -> f64 {
    if warmup > 0 && step < warmup {
        return (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let t = ((step - warmup.min(step)) as f64 / span).min(1.0);
    0.05 + 0.95 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
}

/// L1 penalty `l1 · Σ|w|` over the given weights (added to the loss).
pub fn l1_penalty(vars: &[Var], l1: f64) -> Result<Option<Tensor>> {
    if l1 <= 0.0 || vars.is_empty() {
        return Ok(None);
    }
    let mut total: Option<Tensor> = None;
    for v in vars {
        let s = v.as_tensor().abs()?.sum_all()?;
        total = Some(match total {
            Some(t) => (t + s)?,
            None => s,
        });
    }
    total.map(|t| t.affine(l1, 0.0)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays() {
        assert!((warmup_cosine(0, 100, 10) - 0.1).abs() < 1e-12);
        assert!((warmup_cosine(9, 100, 10) - 1.0).abs() < 1e-12);
        assert!((warmup_cosine(10, 100, 10) - 1.0).abs() < 1e-12);
        assert!(warmup_cosine(55, 100, 10) < 0.6);
        assert!((warmup_cosine(100, 100, 10) - 0.05).abs() < 1e-9);
    }
}
