//! Calibrated probabilities: a single softmax temperature fitted on held-out logits
//! (temperature scaling), with the expected calibration error before and after. The "after"
//! figure is cross-fitted — the temperature is fitted on one half of the held-out logits and
//! measured on the other, both ways — so it is not graded on its own training data.

use serde::{Deserialize, Serialize};

use super::metrics::{expected_calibration_error, softmax_rows};

/// Fewer held-out examples than this: keep temperature 1 (a fit would be noise).
const MIN_EXAMPLES: usize = 10;
const ECE_BINS: usize = 15;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Calibration {
    pub temperature: f64,
    pub ece_before: f64,
    pub ece_after: f64,
    pub method: String,
}

fn nll(logits: &[Vec<f32>], y: &[usize], t: f64) -> f64 {
    let probs = softmax_rows(logits, t as f32);
    probs
        .iter()
        .zip(y)
        .map(|(p, &c)| -(p[c] as f64).clamp(1e-15, 1.0).ln())
        .sum::<f64>()
        / y.len().max(1) as f64
}

/// The temperature minimising the log loss of `logits`, by golden-section search on
/// log T in [ln 0.05, ln 20].
pub fn fit_temperature(logits: &[Vec<f32>], y: &[usize]) -> f64 {
    let f = |log_t: f64| nll(logits, y, log_t.exp());
    let (mut a, mut b) = (0.05f64.ln(), 20f64.ln());
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let mut c = b - g * (b - a);
    let mut d = a + g * (b - a);
    let (mut fc, mut fd) = (f(c), f(d));
    for _ in 0..60 {
        if fc < fd {
            b = d;
            d = c;
            fd = fc;
            c = b - g * (b - a);
            fc = f(c);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + g * (b - a);
            fd = f(d);
        }
    }
    ((a + b) / 2.0).exp()
}

/// Fits the temperature on all of `logits` and reports the calibration error before and
/// (cross-fitted) after.
pub fn calibrate(logits: &[Vec<f32>], y: &[usize]) -> Calibration {
    let ece = |t: f64, idx: &[usize]| {
        let l: Vec<Vec<f32>> = idx.iter().map(|&i| logits[i].clone()).collect();
        let yy: Vec<usize> = idx.iter().map(|&i| y[i]).collect();
        expected_calibration_error(&softmax_rows(&l, t as f32), &yy, ECE_BINS)
    };
    let all: Vec<usize> = (0..y.len()).collect();
    let ece_before = ece(1.0, &all);
    if y.len() < MIN_EXAMPLES {
        return Calibration {
            temperature: 1.0,
            ece_before,
            ece_after: ece_before,
            method: format!(
                "not calibrated: fewer than {MIN_EXAMPLES} held-out examples to fit a temperature on"
            ),
        };
    }
    let (even, odd): (Vec<usize>, Vec<usize>) = all.iter().partition(|&&i| i % 2 == 0);
    let fit_on = |idx: &[usize]| {
        let l: Vec<Vec<f32>> = idx.iter().map(|&i| logits[i].clone()).collect();
        let yy: Vec<usize> = idx.iter().map(|&i| y[i]).collect();
        fit_temperature(&l, &yy)
    };
    let after_odd = ece(fit_on(&even), &odd);
    let after_even = ece(fit_on(&odd), &even);
    let n = y.len() as f64;
    let ece_after = (after_odd * odd.len() as f64 + after_even * even.len() as f64) / n;
    Calibration {
        temperature: fit_temperature(logits, y),
        ece_before,
        ece_after,
        method: "temperature scaling fitted on held-out logits; ece_after is cross-fitted (fitted on one half, measured on the other)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Over-confident logits (the true temperature is 3) are cooled down and their
    /// calibration error drops.
    #[test]
    fn recovers_the_temperature_of_overconfident_logits() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut logits = Vec::new();
        let mut y = Vec::new();
        for _ in 0..600 {
            let z: Vec<f32> = (0..3).map(|_| rng.random_range(-2.0f32..2.0)).collect();
            // Sample the label from softmax(z), then report logits 3x too sharp.
            let p = softmax_rows(std::slice::from_ref(&z), 1.0).remove(0);
            let u: f32 = rng.random();
            let label = if u < p[0] {
                0
            } else if u < p[0] + p[1] {
                1
            } else {
                2
            };
            logits.push(z.iter().map(|v| v * 3.0).collect());
            y.push(label);
        }
        let t = fit_temperature(&logits, &y);
        assert!((t - 3.0).abs() < 0.6, "fitted {t}");
        let c = calibrate(&logits, &y);
        assert!(c.ece_after < c.ece_before * 0.6, "{c:?}");
    }

    #[test]
    fn too_few_examples_keep_temperature_one() {
        let c = calibrate(&vec![vec![1.0, 0.0]; 4], &[0, 0, 1, 1]);
        assert_eq!(c.temperature, 1.0);
    }
}
