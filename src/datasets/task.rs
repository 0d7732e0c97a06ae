//! What a dataset asks the model to do: pick one class, predict a number, or pick every
//! label that applies. Decided once at upload (guessed from the labels, or given as
//! `task=`), stored with the dataset, and carried through training and prediction.

use serde::{Deserialize, Serialize};

use super::{DatasetError, ParsedDataset, RawExample};
use crate::error_code::Code;

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// One label per example, out of a fixed set.
    #[default]
    Classification,
    /// A numeric target per example (a rating, a price, a score).
    Regression,
    /// Any number of labels per example (tags, topics).
    Multilabel,
}

impl Task {
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Classification => "classification",
            Task::Regression => "regression",
            Task::Multilabel => "multilabel",
        }
    }

    pub fn parse(s: &str) -> Option<Task> {
        match s.trim().to_ascii_lowercase().as_str() {
            "classification" => Some(Task::Classification),
            "regression" => Some(Task::Regression),
            "multilabel" | "multi-label" | "multi_label" => Some(Task::Multilabel),
            _ => None,
        }
    }

    /// The `task` form field of an upload, checked.
    pub fn from_form(value: Option<&str>) -> Result<Option<Task>, DatasetError> {
        match value.map(str::trim).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => Task::parse(v).map(Some).ok_or_else(|| {
                DatasetError::invalid(
                    Code::InvalidTask,
                    format!(
                        "task {v:?} is not known; send task=classification, task=regression or task=multilabel (or leave it out to let the labels decide)"
                    ),
                )
            }),
        }
    }
}

/// Numeric labels with at most this many distinct integer values are guessed to be
/// classes (0/1 sentiment, 1-5 stars as categories); more, or any fraction, a quantity.
const MAX_INTEGER_CLASSES: usize = 10;

/// The value of a label as a regression target (any spelling Rust reads as `f64`,
/// including `NaN` and `inf`, which [`check_regression`] then refuses by name).
pub fn target_value(label: &str) -> Option<f64> {
    label.trim().parse::<f64>().ok()
}

impl ParsedDataset {
    /// Where example `i` came from, for messages: its line in a text file, else its rank.
    pub fn row_name(&self, i: usize) -> String {
        match self.lines.get(i) {
            Some(line) => format!("line {line}"),
            None => format!("example {}", i + 1),
        }
    }

    fn is_multi(&self) -> bool {
        self.examples.iter().any(|e| {
            matches!(
                e,
                RawExample::TextLabels { .. } | RawExample::ImageLabels { .. }
            )
        })
    }

    /// The task: the one asked for when it fits the columns, else the guess from the
    /// labels; with the warning to add when the guess may be wrong.
    pub fn decide_task(&mut self, requested: Option<Task>) -> Result<Task, DatasetError> {
        if self.is_multi() {
            return match requested {
                None | Some(Task::Multilabel) => Ok(Task::Multilabel),
                Some(t) => Err(DatasetError::invalid(
                    Code::InvalidTask,
                    format!(
                        "task={} needs one label per example in a `label` column, but the file has a `labels` column (several labels per example); rename it to `label` or send task=multilabel",
                        t.as_str()
                    ),
                )),
            };
        }
        match requested {
            Some(Task::Multilabel) => {
                for e in &mut self.examples {
                    e.make_multi();
                }
                Ok(Task::Multilabel)
            }
            Some(t) => Ok(t),
            None => Ok(self.guess_single()),
        }
    }

    /// Regression when every label is a number and they are not a handful of integers.
    fn guess_single(&mut self) -> Task {
        let values: Option<Vec<f64>> = self
            .examples
            .iter()
            .map(|e| target_value(e.labels()[0].as_str()))
            .collect();
        let Some(values) = values else {
            return Task::Classification;
        };
        let fractional = values.iter().any(|v| v.fract() != 0.0 || !v.is_finite());
        let mut distinct: Vec<f64> = values.clone();
        distinct.sort_by(f64::total_cmp);
        distinct.dedup();
        if fractional || distinct.len() > MAX_INTEGER_CLASSES {
            return Task::Regression;
        }
        self.warnings.push(format!(
            "every label is one of {} whole numbers, so they are treated as classes; if they are quantities (a rating, a score), upload again with task=regression",
            distinct.len()
        ));
        Task::Classification
    }

    /// Every target a finite number, and not all the same.
    pub fn check_regression(&self) -> Result<Vec<f64>, DatasetError> {
        let mut values = Vec::with_capacity(self.examples.len());
        for (i, e) in self.examples.iter().enumerate() {
            let label = e.labels()[0].as_str();
            let Some(v) = target_value(label) else {
                return Err(DatasetError::invalid(
                    Code::InvalidTarget,
                    format!(
                        "{}: the target {label:?} is not a number; a regression dataset needs a number in every row (fix or remove the row, or upload with task=classification)",
                        self.row_name(i)
                    ),
                ));
            };
            if !v.is_finite() {
                return Err(DatasetError::invalid(
                    Code::InvalidTarget,
                    format!(
                        "{}: the target {label:?} is not a finite number; give the row a real value or remove it",
                        self.row_name(i)
                    ),
                ));
            }
            values.push(v);
        }
        let first = values[0];
        if values.iter().all(|&v| v == first) {
            return Err(DatasetError::invalid(
                Code::TooFewLabels,
                format!(
                    "every example has the target {first}; a regression model needs targets that vary"
                ),
            ));
        }
        Ok(values)
    }
}

/// Min, max, mean and standard deviation of a regression dataset's targets.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TargetSummary {
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub std: f64,
}

impl TargetSummary {
    pub fn of(values: &[f64]) -> TargetSummary {
        let n = values.len().max(1) as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        TargetSummary {
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            mean,
            std: var.sqrt(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backbones::Modality;

    fn parsed(labels: &[&str]) -> ParsedDataset {
        ParsedDataset {
            modality: Modality::Text,
            format: "csv",
            examples: labels
                .iter()
                .enumerate()
                .map(|(i, l)| RawExample::Text {
                    text: format!("t{i}"),
                    label: l.to_string(),
                })
                .collect(),
            lines: (2..2 + labels.len()).collect(),
            warnings: Vec::new(),
            task: Task::Classification,
            targets: None,
        }
    }

    #[test]
    fn guesses() {
        assert_eq!(
            parsed(&["1.5", "2", "3"]).decide_task(None).unwrap(),
            Task::Regression
        );
        let mut binary = parsed(&["0", "1", "1"]);
        assert_eq!(binary.decide_task(None).unwrap(), Task::Classification);
        assert!(binary.warnings[0].contains("task=regression"));
        assert_eq!(
            parsed(&["cat", "2.5"]).decide_task(None).unwrap(),
            Task::Classification
        );
        let many: Vec<String> = (0..20).map(|i| i.to_string()).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(parsed(&many).decide_task(None).unwrap(), Task::Regression);
    }

    #[test]
    fn regression_errors_name_the_row() {
        let e = parsed(&["1", "x", "2"]).check_regression().unwrap_err();
        assert!(e.to_string().contains("line 3") && e.to_string().contains("\"x\""));
        let e = parsed(&["1", "2", "NaN"]).check_regression().unwrap_err();
        assert!(e.to_string().contains("line 4") && e.to_string().contains("finite"));
        assert!(parsed(&["2", "2.0"]).check_regression().is_err());
        assert_eq!(
            Task::from_form(Some("Regression")).unwrap(),
            Some(Task::Regression)
        );
        assert!(Task::from_form(Some("ranking")).is_err());
    }
}
