//! Label hygiene shared by every dataset format: labels that are numbers are compared as
//! numbers (`1`, `1.0` and `1e0` are one class, kept under the first spelling seen), and
//! labels that are still different but equal after Unicode normalisation (NFKC), case
//! folding and whitespace collapsing are named in a warning, since they are most likely
//! the same class spelled two ways.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use unicode_normalization::UnicodeNormalization;

/// Maps each label to its canonical spelling, remembering what it merged.
#[derive(Default)]
pub struct LabelCanon {
    /// Numeric value (normalised decimal) → the first spelling seen.
    by_number: HashMap<String, String>,
    /// First spelling → the other spellings merged into it.
    merged: BTreeMap<String, BTreeSet<String>>,
}

impl LabelCanon {
    /// The label to store for `label`: the first spelling of its number when it is one.
    pub fn canonical(&mut self, label: &str) -> String {
        let Some(key) = numeric_key(label) else {
            return label.to_string();
        };
        let first = self
            .by_number
            .entry(key)
            .or_insert_with(|| label.to_string())
            .clone();
        if first != label {
            self.merged
                .entry(first.clone())
                .or_default()
                .insert(label.to_string());
        }
        first
    }

    /// A warning naming the numeric labels that were merged, if any were.
    pub fn warning(&self) -> Option<String> {
        if self.merged.is_empty() {
            return None;
        }
        let shown: Vec<String> = self
            .merged
            .iter()
            .take(5)
            .map(|(first, others)| {
                let others: Vec<String> = others.iter().map(|o| format!("{o:?}")).collect();
                format!("{} → {first:?}", others.join(", "))
            })
            .collect();
        Some(format!(
            "numeric labels that are the same number were merged into one class: {}{}",
            shown.join("; "),
            if self.merged.len() > 5 { "; ..." } else { "" }
        ))
    }
}

/// A number's value as a normalised decimal (`[-]0.<digits>e<exp>`, no leading or trailing
/// zeros in the digits), exact for any length; `None` when `s` is not a plain decimal number.
fn numeric_key(s: &str) -> Option<String> {
    let (negative, rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], rest[i + 1..].parse::<i64>().ok()?),
        None => (rest, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all_digits = int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !all_digits {
        return None;
    }
    let digits = format!("{int}{frac}");
    let significant = digits.trim_start_matches('0');
    let leading_zeros = (digits.len() - significant.len()) as i64;
    let significant = significant.trim_end_matches('0');
    if significant.is_empty() {
        return Some("0".into());
    }
    let exp = exp
        .checked_add(int.len() as i64)?
        .checked_sub(leading_zeros)?;
    let sign = if negative { "-" } else { "" };
    Some(format!("{sign}0.{significant}e{exp}"))
}

/// How a label reads to a person: NFKC (a non-breaking space becomes a space, full-width
/// letters plain ones), lower case, runs of whitespace as one space.
fn folded(label: &str) -> String {
    let lower: String = label.nfkc().collect::<String>().to_lowercase();
    lower.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A warning naming the groups of distinct labels that read the same once folded.
pub fn lookalike_warning<'a>(labels: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut groups: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for label in labels {
        groups.entry(folded(label)).or_default().insert(label);
    }
    let clashes: Vec<String> = groups
        .values()
        .filter(|g| g.len() > 1)
        .map(|g| {
            let names: Vec<String> = g.iter().map(|l| format!("{l:?}")).collect();
            names.join(" / ")
        })
        .collect();
    if clashes.is_empty() {
        return None;
    }
    Some(format!(
        "labels that differ only by letter case, spacing or Unicode form are separate classes: {}{}; if they mean the same class, spell them identically and upload again",
        clashes
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("; "),
        if clashes.len() > 5 { "; ..." } else { "" }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_compare_as_numbers_exactly() {
        let key = |s| numeric_key(s).unwrap();
        assert_eq!(key("1"), key("1.0"));
        assert_eq!(key("1"), key("1e0"));
        assert_eq!(key("1000"), key("1e3"));
        assert_eq!(key("0.5"), key(".5"));
        assert_eq!(key("007"), key("7"));
        assert_eq!(key("-0"), key("0.000"));
        assert_ne!(key("1"), key("-1"));
        assert_ne!(key("12345678901234567890"), key("12345678901234567891"));
        for not_a_number in [
            "", "-", ".", "1.2.3", "1e", "abc", "1,5", "inf", "NaN", "1 ",
        ] {
            assert_eq!(numeric_key(not_a_number), None, "{not_a_number:?}");
        }
    }

    #[test]
    fn canon_keeps_the_first_spelling_and_reports_merges() {
        let mut canon = LabelCanon::default();
        assert_eq!(canon.canonical("1"), "1");
        assert_eq!(canon.canonical("1.0"), "1");
        assert_eq!(canon.canonical("cat"), "cat");
        assert_eq!(canon.canonical("2.50"), "2.50");
        assert_eq!(canon.canonical("2.5"), "2.50");
        let w = canon.warning().unwrap();
        assert!(
            w.contains("\"1.0\" → \"1\"") && w.contains("\"2.5\" → \"2.50\""),
            "{w}"
        );
        assert!(LabelCanon::default().warning().is_none());
    }

    #[test]
    fn lookalikes_are_named() {
        let w = lookalike_warning(["Cat", "cat", "dog", "new york", "new\u{a0}york", "ｄｏｇ"])
            .unwrap();
        assert!(w.contains("\"Cat\" / \"cat\""), "{w}");
        assert!(w.contains("new york"), "{w}");
        assert!(w.contains("ｄｏｇ"), "{w}");
        assert!(lookalike_warning(["a", "b", "c"]).is_none());
    }
}
