//! Stratified splits fixed by a seed: a holdout split or k folds. Every example lands in
//! exactly one validation part; class proportions are kept in each part.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

/// Indices into the example list.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub train: Vec<usize>,
    pub valid: Vec<usize>,
}

fn indices_by_class(labels: &[usize], num_classes: usize, rng: &mut StdRng) -> Vec<Vec<usize>> {
    let mut by_class = vec![Vec::new(); num_classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l].push(i);
    }
    for idx in &mut by_class {
        idx.shuffle(rng);
    }
    by_class
}

/// Stratified holdout: about `fraction` of each class goes to validation, at least one
/// example of each class with two or more, and never a class's last example.
pub fn holdout(labels: &[usize], num_classes: usize, fraction: f64, seed: u64) -> Split {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut split = Split {
        train: Vec::new(),
        valid: Vec::new(),
    };
    for idx in indices_by_class(labels, num_classes, &mut rng) {
        let n = idx.len();
        let mut k = (n as f64 * fraction).round() as usize;
        if n >= 2 {
            k = k.clamp(1, n - 1);
        } else {
            k = 0;
        }
        split.valid.extend_from_slice(&idx[..k]);
        split.train.extend_from_slice(&idx[k..]);
    }
    split.train.sort_unstable();
    split.valid.sort_unstable();
    split
}

/// Stratified k-fold: each class is dealt round-robin into `k` folds after a seeded shuffle.
pub fn kfold(labels: &[usize], num_classes: usize, k: usize, seed: u64) -> Vec<Split> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut fold_of = vec![0usize; labels.len()];
    let mut offset = 0;
    for idx in indices_by_class(labels, num_classes, &mut rng) {
        for (j, &i) in idx.iter().enumerate() {
            // Continue the deal where the previous class stopped so fold sizes stay even.
            fold_of[i] = (offset + j) % k;
        }
        offset += idx.len();
    }
    (0..k)
        .map(|f| Split {
            train: (0..labels.len()).filter(|&i| fold_of[i] != f).collect(),
            valid: (0..labels.len()).filter(|&i| fold_of[i] == f).collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holdout_is_stratified_disjoint_and_seeded() {
        let labels: Vec<usize> = (0..100).map(|i| if i < 80 { 0 } else { 1 }).collect();
        let s = holdout(&labels, 2, 0.2, 7);
        assert_eq!(s.valid.len(), 20);
        assert_eq!(s.valid.iter().filter(|&&i| labels[i] == 1).count(), 4);
        let mut all: Vec<usize> = s.train.iter().chain(&s.valid).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert_eq!(s, holdout(&labels, 2, 0.2, 7));
        assert_ne!(s, holdout(&labels, 2, 0.2, 8));
    }

    #[test]
    fn tiny_classes_keep_a_training_example() {
        let s = holdout(&[0, 0, 1], 2, 0.5, 1);
        assert_eq!(s.valid.len(), 1);
        assert!(s.train.contains(&2));
    }

    #[test]
    fn kfold_covers_every_example_once() {
        let labels: Vec<usize> = (0..23).map(|i| i % 3).collect();
        let folds = kfold(&labels, 3, 5, 3);
        let mut seen = [0; 23];
        for f in &folds {
            for &i in &f.valid {
                seen[i] += 1;
            }
            assert!(f.valid.iter().all(|i| !f.train.contains(i)));
            assert!((4..=5).contains(&f.valid.len()));
        }
        assert!(seen.iter().all(|&c| c == 1));
    }
}
