//! Head on frozen features, or fine-tuned backbone: chosen for a task run as for
//! classification, by the one-standard-error rule over every held-out row — fine-tuning is
//! the bigger model, so it is kept only when its per-row held-out loss (squared error, or
//! binary cross-entropy averaged over the labels) beats the head's by more than the noise
//! of that comparison.

use super::Targets;
use crate::train::report::{Candidate, MeanStd};

/// The per-row held-out loss of outputs `out` on rows `rows`: squared error of the value,
/// or the mean binary cross-entropy of the label scores.
pub fn row_losses(targets: &Targets, rows: &[usize], out: &[Vec<f64>]) -> Vec<f64> {
    rows.iter()
        .zip(out)
        .map(|(&i, o)| match targets {
            Targets::Values(v) => (o[0] - v[i]).powi(2),
            Targets::Sets(s) => {
                let k = s[i].len().max(1) as f64;
                s[i].iter()
                    .zip(o)
                    .map(|(&on, &p)| {
                        let p = p.clamp(1e-7, 1.0 - 1e-7);
                        -if on { p.ln() } else { (1.0 - p).ln() }
                    })
                    .sum::<f64>()
                    / k
            }
            Targets::Classes => unreachable!("classification selects in train::select"),
        })
        .collect()
}

/// The kept candidate and why.
pub fn select(
    targets: &Targets,
    rows: &[usize],
    head: &[Vec<f64>],
    tuned: &[Vec<f64>],
) -> (Candidate, String) {
    let loss = match targets {
        Targets::Values(_) => "held-out squared error",
        _ => "held-out binary cross-entropy",
    };
    let (a, b) = (
        row_losses(targets, rows, head),
        row_losses(targets, rows, tuned),
    );
    let d: Vec<f64> = a.iter().zip(&b).map(|(a, b)| a - b).collect();
    let m = MeanStd::of(&d);
    let se = m.std / (d.len().max(1) as f64).sqrt();
    let (mean_a, mean_b) = (MeanStd::of(&a).mean, MeanStd::of(&b).mean);
    if m.mean > se {
        (
            Candidate::Finetuned,
            format!(
                "fine-tuning lowered the {loss} from {mean_a:.4} to {mean_b:.4}; the gain {:.4} exceeds one standard error ({se:.4})",
                m.mean
            ),
        )
    } else {
        (
            Candidate::HeadOnly,
            format!(
                "fine-tuning did not beat the head on frozen features by more than one standard error ({loss} {mean_b:.4} against {mean_a:.4}; gain {:.4} ± {se:.4}): the simpler model is kept",
                m.mean
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clearly_better_tuning_is_kept_and_a_tie_is_not() {
        let truth: Vec<f64> = (0..40).map(f64::from).collect();
        let targets = Targets::Values(truth.clone());
        let rows: Vec<usize> = (0..40).collect();
        let off = |e: f64| truth.iter().map(|t| vec![t + e]).collect::<Vec<_>>();
        let (c, why) = select(&targets, &rows, &off(1.0), &off(0.1));
        assert_eq!(c, Candidate::Finetuned, "{why}");
        // Same errors, alternating sides: no gain at all.
        let wobble: Vec<Vec<f64>> = truth
            .iter()
            .enumerate()
            .map(|(i, t)| vec![t + if i % 2 == 0 { 0.5 } else { -0.5 }])
            .collect();
        let (c, why) = select(&targets, &rows, &off(0.5), &wobble);
        assert_eq!(c, Candidate::HeadOnly, "{why}");
    }

    #[test]
    fn multilabel_loss_is_the_mean_cross_entropy_over_labels() {
        let targets = Targets::Sets(vec![vec![true, false]]);
        let l = row_losses(&targets, &[0], &[vec![0.5, 0.5]]);
        assert!((l[0] - 2f64.ln()).abs() < 1e-12, "{l:?}");
    }
}
