//! The label part of one text row: one label (a class, or a regression target's number),
//! or a multi-label row's set (`a|b|c` in CSV, a JSON list in JSONL), checked the same way
//! whichever it is, so every message names the line and the fix.

use super::labels::LabelCanon;
use super::{DatasetError, RawExample};
use crate::error_code::Code;

/// Separates the labels of a multi-label CSV cell.
pub const SEPARATOR: char = '|';

#[derive(Debug, Clone, PartialEq)]
pub enum RowLabel {
    One(String),
    Many(Vec<String>),
}

impl RowLabel {
    /// A CSV `labels` cell: `a|b|c`, blanks around each label dropped.
    pub fn split(cell: &str) -> RowLabel {
        RowLabel::Many(
            cell.split(SEPARATOR)
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect(),
        )
    }

    /// Each label trimmed and checked (NUL bytes, empty, length).
    pub fn checked(self, line: usize) -> Result<RowLabel, DatasetError> {
        match self {
            RowLabel::One(l) => Ok(RowLabel::One(check_one(&l, line)?.to_string())),
            RowLabel::Many(ls) => {
                if ls.is_empty() {
                    return Err(DatasetError::invalid(
                        Code::EmptyLabel,
                        format!(
                            "line {line}: the label list is empty; give every example at least one label (a|b in CSV, [\"a\",\"b\"] in JSONL) or remove the row"
                        ),
                    ));
                }
                let ls = ls
                    .iter()
                    .map(|l| check_one(l, line).map(str::to_string))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(RowLabel::Many(ls))
            }
        }
    }

    /// Numeric labels merged by value ([`LabelCanon`]); a set sorted and deduplicated.
    pub fn canonical(self, canon: &mut LabelCanon) -> RowLabel {
        match self {
            RowLabel::One(l) => RowLabel::One(canon.canonical(&l)),
            RowLabel::Many(ls) => {
                let mut ls: Vec<String> = ls.iter().map(|l| canon.canonical(l)).collect();
                ls.sort();
                ls.dedup();
                RowLabel::Many(ls)
            }
        }
    }

    /// What two rows with the same text are compared by.
    pub fn key(&self) -> String {
        match self {
            RowLabel::One(l) => l.clone(),
            RowLabel::Many(ls) => ls.join(&SEPARATOR.to_string()),
        }
    }

    pub fn example(self, text: String) -> RawExample {
        match self {
            RowLabel::One(label) => RawExample::Text { text, label },
            RowLabel::Many(labels) => RawExample::TextLabels { text, labels },
        }
    }
}

fn check_one(label: &str, line: usize) -> Result<&str, DatasetError> {
    if label.contains('\0') {
        return Err(DatasetError::invalid(
            Code::NulByte,
            format!(
                "line {line}: the label contains a NUL byte (\\0); remove it (a file full of them is UTF-16: save it as UTF-8)"
            ),
        ));
    }
    let label = label.trim();
    if label.is_empty() {
        return Err(DatasetError::invalid(
            Code::EmptyLabel,
            format!(
                "line {line}: the label is empty; give every example a label or remove the row"
            ),
        ));
    }
    if label.chars().count() > 200 {
        return Err(DatasetError::invalid(
            Code::LabelTooLong,
            format!(
                "line {line}: the label is longer than 200 characters; labels are class names, not texts (are the columns swapped?)"
            ),
        ));
    }
    Ok(label)
}

/// A JSONL `"labels"` field: a list of strings or numbers (or one `a|b` string).
pub fn labels_field(value: &serde_json::Value, at: &str) -> Result<RowLabel, DatasetError> {
    use serde_json::Value;
    let bad = || {
        DatasetError::invalid(
            Code::InvalidField,
            format!("{at}: \"labels\" must be a list of strings, like [\"a\", \"b\"]"),
        )
    };
    match value {
        Value::String(s) => Ok(RowLabel::split(s)),
        Value::Array(items) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                _ => Err(bad()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(RowLabel::Many),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_are_split_checked_and_sorted() {
        let mut canon = LabelCanon::default();
        let l = RowLabel::split(" b | a||b ")
            .checked(3)
            .unwrap()
            .canonical(&mut canon);
        assert_eq!(l, RowLabel::Many(vec!["a".into(), "b".into()]));
        let e = RowLabel::split(" | ").checked(7).unwrap_err().to_string();
        assert!(e.contains("line 7") && e.contains("empty"), "{e}");
        let v = serde_json::json!(["x", 2]);
        assert_eq!(
            labels_field(&v, "line 1").unwrap(),
            RowLabel::Many(vec!["x".into(), "2".into()])
        );
        assert!(labels_field(&serde_json::json!({"a": 1}), "line 1").is_err());
    }
}
