//! The label-noise finder: examples whose given label the model finds least likely, judged
//! on predictions made without that example in training (out-of-fold, or the validation
//! split), with the label the model prefers. Users check these first for labelling errors.

use serde::{Deserialize, Serialize};

use super::metrics::argmax;

/// One suspicious example.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Suspect {
    /// Position of the example in the dataset (0-based, upload order after cleaning).
    pub index: usize,
    pub given_label: String,
    /// Probability the model gives the given label.
    pub given_probability: f32,
    pub suggested_label: String,
    pub suggested_probability: f32,
}

/// The `limit` examples with the lowest probability on their given label, among those the
/// model would relabel or gives less than 50% to. `rows` = (dataset index, true class,
/// held-out probabilities).
pub fn rank(rows: &[(usize, usize, Vec<f32>)], labels: &[String], limit: usize) -> Vec<Suspect> {
    let mut out: Vec<Suspect> = rows
        .iter()
        .filter_map(|(index, given, p)| {
            let best = argmax(p);
            (best != *given || p[*given] < 0.5).then(|| Suspect {
                index: *index,
                given_label: labels[*given].clone(),
                given_probability: p[*given],
                suggested_label: labels[best].clone(),
                suggested_probability: p[best],
            })
        })
        .collect();
    out.sort_by(|a, b| a.given_probability.total_cmp(&b.given_probability));
    out.truncate(limit);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_likely_given_labels_come_first() {
        let labels = vec!["a".to_string(), "b".to_string()];
        let rows = vec![
            (0, 0, vec![0.9, 0.1]),
            (1, 0, vec![0.05, 0.95]),
            (2, 1, vec![0.6, 0.4]),
            (3, 1, vec![0.2, 0.8]),
        ];
        let s = rank(&rows, &labels, 10);
        assert_eq!(s.iter().map(|s| s.index).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(s[0].suggested_label, "b");
        assert_eq!(rank(&rows, &labels, 1).len(), 1);
    }
}
