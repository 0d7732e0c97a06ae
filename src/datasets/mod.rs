//! Uploaded datasets: parsing and validating what users send, the stored example list, and
//! the stratified splits a job trains and validates on.

pub mod decode;
pub mod image;
pub mod labels;
pub mod row_label;
pub mod split;
pub mod stored;
pub mod task;
pub mod text;
pub mod unzip;

use std::collections::BTreeMap;

use crate::backbones::Modality;
use crate::error_code::{Code, ErrorCode};
pub use task::{TargetSummary, Task};

/// What a dataset upload turned into: examples with label names, plus tolerated problems.
#[derive(Debug, Clone)]
pub struct ParsedDataset {
    pub modality: Modality,
    pub format: &'static str,
    pub examples: Vec<RawExample>,
    /// Text files: the line each example came from (for messages); empty for images.
    pub lines: Vec<usize>,
    pub warnings: Vec<String>,
    /// Decided by [`ParsedDataset::finish`].
    pub task: Task,
    /// Regression: the targets' range.
    pub targets: Option<TargetSummary>,
}

/// One labelled example as stored: a text, or an image file relative to the dataset folder,
/// with one label (a class, or a regression target's number) or a set of labels.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum RawExample {
    Text { text: String, label: String },
    Image { file: String, label: String },
    TextLabels { text: String, labels: Vec<String> },
    ImageLabels { file: String, labels: Vec<String> },
}

impl RawExample {
    /// Its label, or labels (multi-label).
    pub fn labels(&self) -> &[String] {
        match self {
            RawExample::Text { label, .. } | RawExample::Image { label, .. } => {
                std::slice::from_ref(label)
            }
            RawExample::TextLabels { labels, .. } | RawExample::ImageLabels { labels, .. } => {
                labels
            }
        }
    }

    /// Its one label (the first of a multi-label example's).
    pub fn label(&self) -> &str {
        self.labels().first().map_or("", String::as_str)
    }

    fn labels_mut(&mut self) -> &mut [String] {
        match self {
            RawExample::Text { label, .. } | RawExample::Image { label, .. } => {
                std::slice::from_mut(label)
            }
            RawExample::TextLabels { labels, .. } | RawExample::ImageLabels { labels, .. } => {
                labels
            }
        }
    }

    /// The same example as a multi-label one (a set of its one label).
    fn make_multi(&mut self) {
        let taken = std::mem::replace(
            self,
            RawExample::Text {
                text: String::new(),
                label: String::new(),
            },
        );
        *self = match taken {
            RawExample::Text { text, label } => RawExample::TextLabels {
                text,
                labels: vec![label],
            },
            RawExample::Image { file, label } => RawExample::ImageLabels {
                file,
                labels: vec![label],
            },
            multi => multi,
        };
    }
}

impl ParsedDataset {
    /// Sorted distinct labels (none for regression).
    pub fn labels(&self) -> Vec<String> {
        self.label_counts().into_keys().collect()
    }

    /// Examples per label (multi-label: examples carrying it; none for regression).
    pub fn label_counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        if self.task == Task::Regression {
            return counts;
        }
        for e in &self.examples {
            for l in e.labels() {
                *counts.entry(l.to_string()).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Checks that hold for every modality once parsing is done, decides the task (the
    /// one asked for, or the guess), and adds the warnings about label sizes.
    pub fn finish(
        mut self,
        limits: &Limits,
        requested: Option<Task>,
    ) -> Result<ParsedDataset, DatasetError> {
        if self.examples.is_empty() {
            return Err(DatasetError::invalid(
                Code::EmptyDataset,
                "the dataset holds no examples; add labelled rows (text datasets: a `text` and a `label` column)",
            ));
        }
        if self.examples.len() > limits.max_examples {
            return Err(DatasetError::TooLarge(format!(
                "the dataset has {} examples, more than the limit of {} (WARMSTART_MAX_EXAMPLES); upload a sample or raise the limit",
                self.examples.len(),
                limits.max_examples
            )));
        }
        if self.modality == Modality::Image {
            // Texts had their labels made canonical row by row (before duplicates were found).
            let mut canon = labels::LabelCanon::default();
            for e in &mut self.examples {
                for label in e.labels_mut() {
                    *label = canon.canonical(label);
                }
            }
            self.warnings.extend(canon.warning());
        }
        self.task = self.decide_task(requested)?;
        match self.task {
            Task::Classification => self.finish_classes(),
            Task::Regression => {
                let values = self.check_regression()?;
                self.targets = Some(TargetSummary::of(&values));
                if values.len() < 20 {
                    self.warnings.push(format!(
                        "only {} examples: the held-out error of a regression model on so few is a rough estimate; add more",
                        values.len()
                    ));
                }
                Ok(self)
            }
            Task::Multilabel => self.finish_multilabel(),
        }
    }

    /// Warns about look-alike labels; fails unless there are at least 2 distinct ones.
    fn check_labels(
        &mut self,
        counts: &BTreeMap<String, usize>,
        has: &str,
        model: &str,
    ) -> Result<(), DatasetError> {
        self.warnings
            .extend(labels::lookalike_warning(counts.keys().map(String::as_str)));
        if counts.len() < 2 {
            let only = counts.keys().next().cloned().unwrap_or_default();
            return Err(DatasetError::invalid(
                Code::TooFewLabels,
                format!("every example {has} {only:?}; {model} needs at least 2 distinct labels"),
            ));
        }
        Ok(())
    }

    /// Classification: at least 2 classes; warnings about look-alike and small classes.
    fn finish_classes(mut self) -> Result<ParsedDataset, DatasetError> {
        let counts = self.label_counts();
        self.check_labels(&counts, "has the label", "a classifier")?;
        let small: Vec<String> = counts
            .iter()
            .filter(|(_, n)| **n < 5)
            .map(|(l, n)| format!("{l:?} ({n})"))
            .collect();
        if !small.is_empty() {
            self.warnings.push(format!(
                "classes with fewer than 5 examples: {}; the model will be unreliable on them, add more examples",
                small.join(", ")
            ));
        }
        Ok(self)
    }

    /// Multi-label: at least 2 labels in all; warnings about rare and ever-present labels.
    fn finish_multilabel(mut self) -> Result<ParsedDataset, DatasetError> {
        for e in &mut self.examples {
            if let RawExample::TextLabels { labels, .. } | RawExample::ImageLabels { labels, .. } =
                e
            {
                labels.sort();
                labels.dedup();
            }
        }
        let counts = self.label_counts();
        self.check_labels(&counts, "has only the label", "a multi-label model")?;
        let n = self.examples.len();
        let rare: Vec<String> = counts
            .iter()
            .filter(|(_, c)| **c < 5)
            .map(|(l, c)| format!("{l:?} ({c})"))
            .collect();
        if !rare.is_empty() {
            self.warnings.push(format!(
                "labels on fewer than 5 examples: {}; the model will be unreliable on them, add more examples",
                rare.join(", ")
            ));
        }
        let everywhere: Vec<String> = counts
            .iter()
            .filter(|(_, c)| **c == n)
            .map(|(l, _)| format!("{l:?}"))
            .collect();
        if !everywhere.is_empty() {
            self.warnings.push(format!(
                "labels on every example: {}; there is nothing to learn about them",
                everywhere.join(", ")
            ));
        }
        Ok(self)
    }
}

/// Size limits applied while parsing (from the config).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_examples: usize,
    pub max_text_chars: usize,
    pub max_image_pixels: u64,
    pub max_zip_entries: usize,
    pub max_uncompressed_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_examples: 100_000,
            max_text_chars: 20_000,
            max_image_pixels: 40_000_000,
            max_zip_entries: 100_000,
            max_uncompressed_bytes: 4 << 30,
        }
    }
}

/// Why an upload was refused. Every message says what is wrong and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The content is not a valid dataset (422), and which of the ways it is not.
    #[error("{message}")]
    Invalid { code: Code, message: String },
    /// The file type is not one we read (415).
    #[error("{0}")]
    UnsupportedFormat(String),
    /// Over a configured limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// Reading or writing the artefact failed (500, details logged only).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl DatasetError {
    pub fn invalid(code: Code, message: impl Into<String>) -> Self {
        DatasetError::Invalid {
            code,
            message: message.into(),
        }
    }
}

impl ErrorCode for DatasetError {
    fn code(&self) -> Code {
        match self {
            DatasetError::Invalid { code, .. } => *code,
            DatasetError::UnsupportedFormat(_) => Code::UnsupportedFormat,
            DatasetError::TooLarge(_) => Code::PayloadTooLarge,
            DatasetError::Io(_) => Code::Internal,
        }
    }
}

/// Guesses the upload's format from its file name, falling back to its first bytes.
pub fn detect_format(file_name: Option<&str>, head: &[u8]) -> Result<&'static str, DatasetError> {
    let lower = file_name.unwrap_or("").to_ascii_lowercase();
    let by_ext = [
        (".csv", "csv"),
        (".tsv", "csv"),
        (".jsonl", "jsonl"),
        (".ndjson", "jsonl"),
        (".json", "jsonl"),
        (".zip", "zip"),
    ]
    .iter()
    .find(|(ext, _)| lower.ends_with(ext))
    .map(|(_, f)| *f);
    if let Some(f) = by_ext {
        return Ok(f);
    }
    if head.starts_with(b"PK\x03\x04") {
        return Ok("zip");
    }
    let first = head
        .iter()
        .copied()
        .find(|b| !(b.is_ascii_whitespace() || *b == 0xEF || *b == 0xBB || *b == 0xBF));
    match first {
        Some(b'{') => Ok("jsonl"),
        Some(_) if lower.is_empty() || lower.ends_with(".txt") => Ok("csv"),
        None => Err(DatasetError::invalid(
            Code::EmptyFile,
            "the uploaded file is empty; send a CSV, JSONL or ZIP file with labelled examples",
        )),
        Some(_) => Err(DatasetError::UnsupportedFormat(format!(
            "cannot read {file_name:?}: accepted formats are CSV (text,label header), JSONL ({{\"text\",\"label\"}} per line) and ZIP of images",
            file_name = file_name.unwrap_or("")
        ))),
    }
}
