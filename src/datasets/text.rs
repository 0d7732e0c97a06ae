//! Text uploads: CSV with a `text` and a `label` column, or JSONL with one
//! `{"text": ..., "label": ...}` object per line (a JSON array of such objects also works).
//! Multi-label: a `labels` column holding `a|b|c`, or a JSON list in `"labels"`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use super::labels::LabelCanon;
use super::row_label::{RowLabel, labels_field};
use super::{DatasetError, Limits, ParsedDataset, RawExample};
use crate::backbones::Modality;
use crate::error_code::Code;

/// Collects rows, checking each, and remembers tolerated problems.
struct RowSink<'a> {
    limits: &'a Limits,
    examples: Vec<RawExample>,
    lines: Vec<usize>,
    first_line_of: HashMap<String, (usize, String)>,
    empty_text_lines: Vec<usize>,
    duplicates: usize,
    conflicts: Vec<(usize, usize)>,
    labels: LabelCanon,
}

impl<'a> RowSink<'a> {
    fn new(limits: &'a Limits) -> Self {
        RowSink {
            limits,
            examples: Vec::new(),
            lines: Vec::new(),
            first_line_of: HashMap::new(),
            empty_text_lines: Vec::new(),
            duplicates: 0,
            conflicts: Vec::new(),
            labels: LabelCanon::default(),
        }
    }

    fn push(&mut self, line: usize, text: &str, label: RowLabel) -> Result<(), DatasetError> {
        if text.contains('\0') {
            return Err(DatasetError::invalid(
                Code::NulByte,
                format!(
                    "line {line}: the text contains a NUL byte (\\0); remove it (a file full of them is UTF-16: save it as UTF-8)"
                ),
            ));
        }
        let label = label.checked(line)?;
        let text = text.trim();
        if text.is_empty() {
            self.empty_text_lines.push(line);
            return Ok(());
        }
        let chars = text.chars().count();
        if chars > self.limits.max_text_chars {
            return Err(DatasetError::invalid(
                Code::TextTooLong,
                format!(
                    "line {line}: the text has {chars} characters, more than the limit of {} (WARMSTART_MAX_TEXT_CHARS); shorten or split it",
                    self.limits.max_text_chars
                ),
            ));
        }
        if self.examples.len() >= self.limits.max_examples {
            return Err(DatasetError::TooLarge(format!(
                "the dataset has more than {} examples (WARMSTART_MAX_EXAMPLES); upload a sample or raise the limit",
                self.limits.max_examples
            )));
        }
        let label = label.canonical(&mut self.labels);
        let key = label.key();
        match self.first_line_of.get(text) {
            Some((_, first_label)) if *first_label == key => {
                self.duplicates += 1;
                return Ok(());
            }
            Some((first_line, _)) => self.conflicts.push((*first_line, line)),
            None => {
                self.first_line_of.insert(text.to_string(), (line, key));
            }
        }
        self.examples.push(label.example(text.to_string()));
        self.lines.push(line);
        Ok(())
    }

    fn finish(self, format: &'static str) -> ParsedDataset {
        let mut warnings = Vec::new();
        if !self.empty_text_lines.is_empty() {
            warnings.push(format!(
                "skipped {} rows with an empty text (lines {})",
                self.empty_text_lines.len(),
                list_lines(&self.empty_text_lines)
            ));
        }
        if self.duplicates > 0 {
            warnings.push(format!(
                "removed {} duplicate rows (same text and label); each text is kept once so that no example lands in both training and validation",
                self.duplicates
            ));
        }
        if !self.conflicts.is_empty() {
            let pairs: Vec<String> = self
                .conflicts
                .iter()
                .take(5)
                .map(|(a, b)| format!("{a} and {b}"))
                .collect();
            warnings.push(format!(
                "{} texts appear with different labels (lines {}{}); check them, they limit the accuracy any model can reach",
                self.conflicts.len(),
                pairs.join(", "),
                if self.conflicts.len() > 5 { ", ..." } else { "" }
            ));
        }
        warnings.extend(self.labels.warning());
        ParsedDataset {
            modality: Modality::Text,
            format,
            examples: self.examples,
            lines: self.lines,
            warnings,
            task: super::Task::Classification,
            targets: None,
        }
    }
}

fn list_lines(lines: &[usize]) -> String {
    let shown: Vec<String> = lines.iter().take(10).map(|l| l.to_string()).collect();
    let more = if lines.len() > 10 { ", ..." } else { "" };
    format!("{}{more}", shown.join(", "))
}

fn not_utf8(line: usize) -> DatasetError {
    DatasetError::invalid(
        Code::InvalidUtf8,
        format!(
            "line {line} is not valid UTF-8; save the file with UTF-8 encoding and upload it again"
        ),
    )
}

/// Parses a CSV file with a header naming a `text` and a `label` column (any order, any
/// case; other columns are ignored). The delimiter (`,` `;` or tab) is taken from the header.
pub fn parse_csv(path: &Path, limits: &Limits) -> Result<ParsedDataset, DatasetError> {
    let mut head = Vec::new();
    BufReader::new(File::open(path)?).read_until(b'\n', &mut head)?;
    let header_line = String::from_utf8_lossy(&head);
    if header_line.trim().trim_start_matches('\u{feff}').is_empty() {
        return Err(DatasetError::invalid(
            Code::EmptyFile,
            "the CSV file is empty; its first line must be a header with `text` and `label` columns",
        ));
    }
    let delimiter = [b',', b';', b'\t']
        .into_iter()
        .max_by_key(|d| header_line.bytes().filter(|b| b == d).count())
        .unwrap_or(b',');

    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .from_reader(BufReader::new(File::open(path)?));
    let headers = reader.byte_headers().map_err(|e| csv_error(e, 1))?.clone();
    let names: Vec<String> = headers
        .iter()
        .map(|h| {
            String::from_utf8_lossy(h)
                .trim_start_matches('\u{feff}')
                .trim()
                .to_ascii_lowercase()
        })
        .collect();
    let find = |want: &str| names.iter().position(|n| n == want);
    for want in ["text", "label", "labels"] {
        let at: Vec<String> = (0..names.len())
            .filter(|&i| names[i] == want)
            .map(|i| (i + 1).to_string())
            .collect();
        if at.len() > 1 {
            return Err(DatasetError::invalid(
                Code::DuplicateColumns,
                format!(
                    "the CSV header has {} `{want}` columns (columns {}); keep one and rename or remove the others",
                    at.len(),
                    at.join(", ")
                ),
            ));
        }
    }
    if find("label").is_some() && find("labels").is_some() {
        return Err(DatasetError::invalid(
            Code::DuplicateColumns,
            "the CSV header has both a `label` and a `labels` column; keep `label` (one label per row) or `labels` (several, as a|b|c)",
        ));
    }
    let multi = find("label").is_none() && find("labels").is_some();
    let (Some(text_col), Some(label_col)) = (find("text"), find("label").or(find("labels"))) else {
        return Err(DatasetError::invalid(
            Code::MissingColumns,
            format!(
                "the CSV header must contain a `text` and a `label` column; found {:?}. Rename your columns (first line) to text,label",
                names
            ),
        ));
    };

    let mut sink = RowSink::new(limits);
    let mut record = csv::ByteRecord::new();
    loop {
        let line = reader.position().line() as usize;
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(csv_error(e, line)),
        }
        let line = record.position().map(|p| p.line() as usize).unwrap_or(line);
        if record.iter().all(|f| f.iter().all(u8::is_ascii_whitespace)) {
            continue;
        }
        let field = |i: usize| -> Result<&str, DatasetError> {
            let bytes = record.get(i).ok_or_else(|| {
                DatasetError::invalid(
                    Code::MissingField,
                    format!(
                        "line {line}: the row has {} fields but the header has {}; quote texts that contain the delimiter (\"...\")",
                        record.len(),
                        names.len()
                    ),
                )
            })?;
            std::str::from_utf8(bytes).map_err(|_| not_utf8(line))
        };
        let text = field(text_col)?;
        let label = field(label_col)?;
        let label = match multi {
            true => RowLabel::split(label),
            false => RowLabel::One(label.to_string()),
        };
        sink.push(line, text, label)?;
    }
    Ok(sink.finish("csv"))
}

fn csv_error(e: csv::Error, line: usize) -> DatasetError {
    match e.kind() {
        csv::ErrorKind::Io(_) => DatasetError::Io(std::io::Error::other(e.to_string())),
        csv::ErrorKind::Utf8 { .. } => not_utf8(line),
        _ => DatasetError::invalid(
            Code::MalformedCsv,
            format!("line {line}: cannot parse the CSV ({e}); check the quoting of that row"),
        ),
    }
}

/// Parses JSONL (one object per line with `text` and `label`) or a JSON array of them.
pub fn parse_jsonl(path: &Path, limits: &Limits) -> Result<ParsedDataset, DatasetError> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut sink = RowSink::new(limits);

    // A JSON array (one document) is read whole; JSONL line by line.
    let first = {
        let buf = reader.fill_buf()?;
        buf.iter()
            .copied()
            .find(|b| !b.is_ascii_whitespace() && ![0xEF, 0xBB, 0xBF].contains(b))
    };
    if first == Some(b'[') {
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes)?;
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            let line = bytes[..e.valid_up_to()]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1;
            not_utf8(line)
        })?;
        let items: Vec<serde_json::Value> = serde_json::from_str(text).map_err(|e| {
            DatasetError::invalid(
                Code::MalformedJsonFile,
                format!("line {}: invalid JSON ({e}); the file must be an array of {{\"text\": ..., \"label\": ...}} objects, or JSONL", e.line()),
            )
        })?;
        for (i, item) in items.iter().enumerate() {
            let (t, l) = text_and_label(item, &format!("item {}", i + 1))?;
            sink.push(i + 1, &t, l)?;
        }
        return Ok(sink.finish("json"));
    }

    let mut buf = Vec::new();
    let mut line = 0usize;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        line += 1;
        let s = std::str::from_utf8(&buf).map_err(|_| not_utf8(line))?;
        let s = s.trim().trim_start_matches('\u{feff}');
        if s.is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(s).map_err(|e| {
            DatasetError::invalid(
                Code::MalformedJsonl,
                format!("line {line}: invalid JSON ({e}); each line must be one object like {{\"text\": \"...\", \"label\": \"...\"}}"),
            )
        })?;
        let (t, l) = text_and_label(&value, &format!("line {line}"))?;
        sink.push(line, &t, l)?;
    }
    Ok(sink.finish("jsonl"))
}

fn text_and_label(value: &serde_json::Value, at: &str) -> Result<(String, RowLabel), DatasetError> {
    use serde_json::Value;
    let Value::Object(obj) = value else {
        return Err(DatasetError::invalid(
            Code::MalformedJsonl,
            format!("{at}: expected an object like {{\"text\": \"...\", \"label\": \"...\"}}"),
        ));
    };
    let text = match obj.get("text") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => {
            return Err(DatasetError::invalid(
                Code::MissingField,
                format!(
                    "{at}: the object has no \"text\" field; every example needs \"text\" and \"label\""
                ),
            ));
        }
        Some(_) => {
            return Err(DatasetError::invalid(
                Code::InvalidField,
                format!("{at}: \"text\" must be a string"),
            ));
        }
    };
    if let (None, Some(labels)) = (obj.get("label"), obj.get("labels")) {
        return Ok((text, labels_field(labels, at)?));
    }
    let label = match obj.get("label") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Null) | None => {
            return Err(DatasetError::invalid(
                Code::EmptyLabel,
                format!(
                    "{at}: the object has no \"label\"; give every example a label or remove it"
                ),
            ));
        }
        Some(_) => {
            return Err(DatasetError::invalid(
                Code::InvalidField,
                format!("{at}: \"label\" must be a string or a number"),
            ));
        }
    };
    Ok((text, RowLabel::One(label)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(content: &[u8]) -> tempfile::NamedTempFile {
        use std::io::Write;
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(content).unwrap();
        f
    }

    #[test]
    fn csv_with_quotes_commas_and_newlines() {
        let f =
            write(b"id,label,text\n1,pos,\"great, really\"\n2,neg,\"bad\nvery bad\"\n3,pos,ok\n");
        let d = parse_csv(f.path(), &Limits::default()).unwrap();
        assert_eq!(d.examples.len(), 3);
        assert_eq!(
            d.examples[1],
            RawExample::Text {
                text: "bad\nvery bad".into(),
                label: "neg".into()
            }
        );
        assert_eq!(d.examples[0].label(), "pos");
    }

    #[test]
    fn csv_semicolon_and_bom() {
        let f = write("\u{feff}Text;Label\nhello;a\nworld;b\n".as_bytes());
        let d = parse_csv(f.path(), &Limits::default()).unwrap();
        assert_eq!(d.labels(), vec!["a", "b"]);
    }

    #[test]
    fn csv_errors_name_the_line() {
        let missing = parse_csv(write(b"sentence,label\nx,a\n").path(), &Limits::default());
        assert!(matches!(
            missing,
            Err(DatasetError::Invalid {
                code: Code::MissingColumns,
                ..
            })
        ));

        let empty_label = parse_csv(write(b"text,label\nx,a\ny,\n").path(), &Limits::default())
            .unwrap_err()
            .to_string();
        assert!(empty_label.contains("line 3"), "{empty_label}");

        let utf8 = parse_csv(
            write(b"text,label\nx,a\n\xff\xfe,b\n").path(),
            &Limits::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(utf8.contains("line 3") && utf8.contains("UTF-8"), "{utf8}");
    }

    #[test]
    fn duplicates_and_conflicts_warn() {
        let f = write(b"text,label\nx,a\nx,a\nx,b\ny,b\n");
        let d = parse_csv(f.path(), &Limits::default()).unwrap();
        assert_eq!(d.examples.len(), 3);
        assert!(d.warnings.iter().any(|w| w.contains("1 duplicate")));
        assert!(d.warnings.iter().any(|w| w.contains("different labels")));
    }

    #[test]
    fn jsonl_and_array() {
        let f = write(b"{\"text\":\"a b\",\"label\":1}\n\n{\"text\":\"c\",\"label\":\"x\"}\n");
        let d = parse_jsonl(f.path(), &Limits::default()).unwrap();
        assert_eq!(d.labels(), vec!["1", "x"]);
        let f = write(b"[{\"text\":\"a\",\"label\":\"p\"},{\"text\":\"b\",\"label\":\"q\"}]");
        assert_eq!(
            parse_jsonl(f.path(), &Limits::default())
                .unwrap()
                .examples
                .len(),
            2
        );
        let bad = parse_jsonl(
            write(b"{\"text\":\"a\",\"label\":\"p\"}\n{oops\n").path(),
            &Limits::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(bad.contains("line 2"), "{bad}");
    }

    #[test]
    fn too_long_text_is_refused() {
        let limits = Limits {
            max_text_chars: 5,
            ..Limits::default()
        };
        let err = parse_csv(write(b"text,label\nabcdefgh,a\n").path(), &limits).unwrap_err();
        assert!(matches!(
            err,
            DatasetError::Invalid {
                code: Code::TextTooLong,
                ..
            }
        ));
    }
}
