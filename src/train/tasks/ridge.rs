//! Ridge regression on standardised features, its L2 strength chosen by an inner k-fold
//! cross-validation on the training rows only: the regression counterpart of the
//! logistic head ([`crate::train::logreg`]). Solved exactly (Cholesky) in whichever of the
//! primal (`d × d`) or dual (`n × n`) forms is smaller, so a few hundred rows of 384 or
//! 4096 features cost a fraction of a second.
//!
//! Hand-written because it is the recipe, not infrastructure: one small positive-definite
//! solve per strength, and no linear-algebra crate is otherwise needed.

use rayon::prelude::*;

/// Strengths searched (the penalty `α‖w‖²` added to the summed squared error).
/// Down to 1e-3: a target that is nearly a linear function of the features (a clean
/// numeric label on a few hundred rows) wants almost no penalty.
pub const ALPHA_GRID: [f64; 10] = [1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6];

/// Rows `[n, d]` row-major and their targets.
pub struct RidgeProblem<'a> {
    pub x: &'a [f32],
    pub d: usize,
    pub y: &'a [f64],
}

/// `y ≈ w·x + b`.
#[derive(Clone, Debug, PartialEq)]
pub struct RidgeModel {
    pub weight: Vec<f64>,
    pub bias: f64,
}

impl RidgeModel {
    pub fn predict(&self, x: &[f32]) -> f64 {
        self.weight
            .iter()
            .zip(x)
            .map(|(w, &v)| w * v as f64)
            .sum::<f64>()
            + self.bias
    }
}

/// The strength cross-validation chose, with the mean held-out squared error of each.
#[derive(Clone, Debug)]
pub struct AlphaChoice {
    pub alpha: f64,
    pub folds: usize,
    pub scores: Vec<(f64, f64)>,
}

/// The centred rows of a fit: features minus their mean, targets minus theirs.
struct Centred {
    x: Vec<f64>,
    y: Vec<f64>,
    x_mean: Vec<f64>,
    y_mean: f64,
    n: usize,
    d: usize,
}

impl RidgeProblem<'_> {
    fn n(&self) -> usize {
        self.y.len()
    }

    fn row(&self, i: usize) -> &[f32] {
        &self.x[i * self.d..(i + 1) * self.d]
    }

    fn centred(&self, rows: &[usize]) -> Centred {
        let (n, d) = (rows.len(), self.d);
        let mut x_mean = vec![0.0f64; d];
        for &i in rows {
            for (m, &v) in x_mean.iter_mut().zip(self.row(i)) {
                *m += v as f64;
            }
        }
        x_mean.iter_mut().for_each(|m| *m /= n.max(1) as f64);
        let y_mean = rows.iter().map(|&i| self.y[i]).sum::<f64>() / n.max(1) as f64;
        let mut x = Vec::with_capacity(n * d);
        for &i in rows {
            x.extend(self.row(i).iter().zip(&x_mean).map(|(&v, m)| v as f64 - m));
        }
        let y = rows.iter().map(|&i| self.y[i] - y_mean).collect();
        Centred {
            x,
            y,
            x_mean,
            y_mean,
            n,
            d,
        }
    }

    /// The models fitted on rows `rows` at every strength of `alphas`.
    pub fn fit_path(&self, rows: &[usize], alphas: &[f64]) -> Vec<RidgeModel> {
        let c = self.centred(rows);
        let (n, d) = (c.n, c.d);
        let dual = n < d;
        // Gram matrix of the smaller side: X Xᵀ (n × n) or Xᵀ X (d × d).
        let m = if dual { n } else { d };
        let gram: Vec<f64> = (0..m * m)
            .into_par_iter()
            .map(|ij| {
                let (i, j) = (ij / m, ij % m);
                if dual {
                    dot(&c.x[i * d..(i + 1) * d], &c.x[j * d..(j + 1) * d])
                } else {
                    (0..n).map(|r| c.x[r * d + i] * c.x[r * d + j]).sum()
                }
            })
            .collect();
        let rhs: Vec<f64> = if dual {
            c.y.clone()
        } else {
            (0..d)
                .map(|j| (0..n).map(|r| c.x[r * d + j] * c.y[r]).sum())
                .collect()
        };
        alphas
            .iter()
            .map(|&alpha| {
                let mut a = gram.clone();
                (0..m).for_each(|i| a[i * m + i] += alpha);
                let sol = cholesky_solve(&mut a, m, &rhs);
                let weight: Vec<f64> = if dual {
                    (0..d)
                        .map(|j| (0..n).map(|r| c.x[r * d + j] * sol[r]).sum())
                        .collect()
                } else {
                    sol
                };
                let bias = c.y_mean - dot(&weight, &c.x_mean);
                RidgeModel { weight, bias }
            })
            .collect()
    }

    /// Chooses α from [`ALPHA_GRID`] by k-fold cross-validation on these rows (k = 5, or
    /// fewer on tiny sets) on pooled held-out squared error; ties go to the stronger.
    pub fn choose_alpha(&self, seed: u64) -> AlphaChoice {
        let n = self.n();
        let folds = n.clamp(2, 5);
        let fold_of = shuffled_folds(n, folds, seed ^ 0xA1FA);
        let mut sse = vec![0.0f64; ALPHA_GRID.len()];
        for f in 0..folds {
            let train: Vec<usize> = (0..n).filter(|&i| fold_of[i] != f).collect();
            let valid: Vec<usize> = (0..n).filter(|&i| fold_of[i] == f).collect();
            for (k, m) in self.fit_path(&train, &ALPHA_GRID).iter().enumerate() {
                sse[k] += valid
                    .iter()
                    .map(|&i| (m.predict(self.row(i)) - self.y[i]).powi(2))
                    .sum::<f64>();
            }
        }
        let scores: Vec<(f64, f64)> = ALPHA_GRID
            .iter()
            .zip(&sse)
            .map(|(&a, &s)| (a, s / n.max(1) as f64))
            .collect();
        let best = scores
            .iter()
            .copied()
            .reduce(|a, b| if b.1 < a.1 * (1.0 - 1e-9) { b } else { a })
            .expect("a non-empty grid");
        AlphaChoice {
            alpha: best.0,
            folds,
            scores,
        }
    }

    /// Cross-validated strength, then the fit on every row at it.
    pub fn fit_cv(&self, seed: u64) -> (RidgeModel, AlphaChoice) {
        let choice = self.choose_alpha(seed);
        let all: Vec<usize> = (0..self.n()).collect();
        let model = self.fit_path(&all, &[choice.alpha]).remove(0);
        (model, choice)
    }
}

/// Fold of each of `n` rows after a seeded shuffle, dealt round-robin.
pub fn shuffled_folds(n: usize, folds: usize, seed: u64) -> Vec<usize> {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    let mut fold_of = vec![0usize; n];
    for (j, &i) in order.iter().enumerate() {
        fold_of[i] = j % folds.max(1);
    }
    fold_of
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Solves `A x = b` for a symmetric positive-definite `A` (`m × m`, overwritten by its
/// Cholesky factor).
fn cholesky_solve(a: &mut [f64], m: usize, b: &[f64]) -> Vec<f64> {
    for j in 0..m {
        let mut diag = a[j * m + j];
        for k in 0..j {
            diag -= a[j * m + k] * a[j * m + k];
        }
        let l = diag.max(1e-12).sqrt();
        a[j * m + j] = l;
        let (head, tail) = a.split_at_mut((j + 1) * m);
        let row_j = &head[j * m..j * m + j];
        tail.par_chunks_mut(m).for_each(|row_i| {
            let s: f64 = row_i[..j].iter().zip(row_j).map(|(x, y)| x * y).sum();
            row_i[j] = (row_i[j] - s) / l;
        });
    }
    // Forward (L z = b), then back (Lᵀ x = z).
    let mut z = b.to_vec();
    for i in 0..m {
        let s: f64 = (0..i).map(|k| a[i * m + k] * z[k]).sum();
        z[i] = (z[i] - s) / a[i * m + i];
    }
    for i in (0..m).rev() {
        let s: f64 = (i + 1..m).map(|k| a[k * m + i] * z[k]).sum();
        z[i] = (z[i] - s) / a[i * m + i];
    }
    z
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_linear_function_in_both_forms() {
        // y = 2·x0 − x1 + 3, no noise: a weak penalty recovers it.
        for d in [2usize, 40] {
            let n = 20;
            let x: Vec<f32> = (0..n * d)
                .map(|i| ((i * 7919 % 97) as f32 / 97.0) - 0.5)
                .collect();
            let y: Vec<f64> = (0..n)
                .map(|r| 2.0 * x[r * d] as f64 - x[r * d + 1] as f64 + 3.0)
                .collect();
            let p = RidgeProblem { x: &x, d, y: &y };
            let all: Vec<usize> = (0..n).collect();
            let m = p.fit_path(&all, &[1e-6]).remove(0);
            for r in 0..n {
                let pred = m.predict(&x[r * d..(r + 1) * d]);
                assert!((pred - y[r]).abs() < 1e-3, "d={d}: {pred} vs {}", y[r]);
            }
        }
    }

    #[test]
    fn cross_validation_prefers_strong_penalties_on_noise() {
        let (n, d) = (40, 30);
        let x: Vec<f32> = (0..n * d)
            .map(|i| ((i * 104729 % 1013) as f32 / 1013.0) - 0.5)
            .collect();
        let y: Vec<f64> = (0..n).map(|i| ((i * 31 % 17) as f64) / 17.0).collect();
        let p = RidgeProblem { x: &x, d, y: &y };
        let choice = p.choose_alpha(1);
        assert!(choice.alpha >= 10.0, "{choice:?}");
    }

    #[test]
    fn cross_validation_prefers_weak_penalties_on_a_clean_linear_target() {
        let (n, d) = (60, 8);
        let x: Vec<f32> = (0..n * d)
            .map(|i| ((i * 7919 % 1013) as f32 / 1013.0) - 0.5)
            .collect();
        let y: Vec<f64> = (0..n)
            .map(|r| (0..d).map(|j| (j as f64 - 3.5) * x[r * d + j] as f64).sum())
            .collect();
        let choice = RidgeProblem { x: &x, d, y: &y }.choose_alpha(1);
        assert!(choice.alpha <= 1e-2, "{choice:?}");
    }
}
