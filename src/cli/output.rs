//! Human output: aligned tables and short summaries of datasets, jobs, models and
//! predictions. `--json` bypasses all of this and prints the server's JSON.

use std::fmt::Write as _;

use super::types::{Baseline, Dataset, Job, Metrics, Model, Prediction};

/// Columns padded to their widest cell; the last column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let head: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&head).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                let _ = write!(out, "{cell}{}  ", " ".repeat(pad));
            }
        }
        out.push('\n');
    }
    out
}

fn num(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.3}"))
}

pub fn dataset(d: &Dataset) -> String {
    let labels: Vec<String> = d
        .label_counts
        .iter()
        .map(|(label, n)| format!("{label} ({n})"))
        .collect();
    let mut out = format!(
        "dataset {}  {:?}\n  {} examples of {}, {} labels: {}\n",
        d.id,
        d.name,
        d.num_examples,
        d.modality,
        d.label_counts.len(),
        labels.join(", ")
    );
    for w in &d.warnings {
        let _ = writeln!(out, "  warning: {w}");
    }
    out
}

pub fn datasets(list: &[Dataset]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|d| {
            vec![
                d.id.clone(),
                d.name.clone(),
                d.modality.clone(),
                d.num_examples.to_string(),
                d.label_counts.len().to_string(),
                d.created_at.clone(),
            ]
        })
        .collect();
    table(
        &["ID", "NAME", "MODALITY", "EXAMPLES", "LABELS", "CREATED"],
        &rows,
    )
}

/// One line for where a job is: status, stage and epoch.
pub fn job_line(j: &Job) -> String {
    let mut line = format!("job {}  {}", j.id, j.status);
    if let Some(stage) = j.stage.as_deref().filter(|_| !j.is_terminal()) {
        let _ = write!(line, " · {stage}");
        if j.progress.epochs > 0 {
            let _ = write!(line, " epoch {}/{}", j.progress.epoch, j.progress.epochs);
        }
    }
    line
}

pub fn job(j: &Job) -> String {
    let mut out = job_line(j);
    let _ = write!(
        out,
        "\n  dataset {}  backbone {}\n  created {}",
        j.dataset_id, j.backbone, j.created_at
    );
    if let Some(at) = &j.finished_at {
        let _ = write!(out, "  finished {at}");
    }
    out.push('\n');
    if let Some(model) = &j.model_id {
        let _ = writeln!(out, "  model {model}");
    }
    if let Some(e) = &j.error {
        let _ = writeln!(out, "  error {}: {}", e.code, e.message);
    }
    if j.status == "succeeded"
        && let Some(m) = &j.metrics
    {
        out.push('\n');
        out.push_str(&metrics(m));
    }
    out
}

pub fn jobs(list: &[Job]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|j| {
            vec![
                j.id.clone(),
                j.status.clone(),
                j.stage.clone().unwrap_or_default(),
                j.backbone.clone(),
                j.model_id.clone().unwrap_or_default(),
                j.created_at.clone(),
            ]
        })
        .collect();
    table(
        &["ID", "STATUS", "STAGE", "BACKBONE", "MODEL", "CREATED"],
        &rows,
    )
}

/// The headline held-out numbers of the model's task.
fn headline(m: &Metrics) -> String {
    match m.task.as_deref() {
        Some("regression") => format!(
            "MAE {}  RMSE {}  R² {}  Spearman {}",
            num(m.mae),
            num(m.rmse),
            num(m.r2),
            num(m.spearman)
        ),
        Some("multilabel") => format!(
            "micro F1 {}  macro F1 {}  subset accuracy {}",
            num(m.micro_f1),
            num(m.macro_f1),
            num(m.subset_accuracy)
        ),
        _ => format!(
            "accuracy {}  macro F1 {}  log loss {}  ECE {}",
            num(m.accuracy),
            num(m.macro_f1),
            num(m.log_loss),
            num(m.ece)
        ),
    }
}

/// The baseline's numbers, in the same terms as [`headline`].
fn baseline(m: &Metrics, b: &Baseline) -> String {
    match m.task.as_deref() {
        Some("regression") => format!("MAE {}  R² {}", num(b.mae), num(b.r2)),
        Some("multilabel") => format!("micro F1 {}  macro F1 {}", num(b.micro_f1), num(b.macro_f1)),
        _ => format!("accuracy {}  macro F1 {}", num(b.accuracy), num(b.macro_f1)),
    }
}

/// The held-out metrics: the headline numbers, then one row per class.
pub fn metrics(m: &Metrics) -> String {
    let mut out = headline(m);
    if let Some(n) = m.num_examples {
        let _ = write!(out, "  (held out: {n} examples)");
    }
    out.push('\n');
    if let Some(b) = &m.baseline {
        let _ = writeln!(out, "baseline ({}): {}", b.method, baseline(m, b));
    }
    if let Some(kept) = &m.selected {
        let _ = write!(out, "kept: {kept}");
        if let Some(secs) = m.train_seconds {
            let _ = write!(out, " (trained in {secs:.1} s)");
        }
        out.push('\n');
    }
    if !m.per_class.is_empty() {
        let rows: Vec<Vec<String>> = m
            .per_class
            .iter()
            .map(|(label, c)| {
                vec![
                    label.clone(),
                    format!("{:.3}", c.precision),
                    format!("{:.3}", c.recall),
                    format!("{:.3}", c.f1),
                    c.support.to_string(),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(
            &["LABEL", "PRECISION", "RECALL", "F1", "SUPPORT"],
            &rows,
        ));
    }
    out
}

pub fn model(m: &Model) -> String {
    let mut out = format!(
        "model {}  {} ({})\n  labels: {}\n  job {}  dataset {}\n  created {}\n",
        m.id,
        m.backbone,
        m.modality,
        m.labels.join(", "),
        m.job_id,
        m.dataset_id,
        m.created_at
    );
    if let Some(metrics_) = &m.metrics {
        out.push('\n');
        out.push_str(&metrics(metrics_));
    }
    out
}

pub fn models(list: &[Model]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|m| {
            let score = m.metrics.as_ref().map_or_else(|| num(None), score);
            vec![
                m.id.clone(),
                m.backbone.clone(),
                m.modality.clone(),
                m.labels.len().to_string(),
                score,
                m.created_at.clone(),
            ]
        })
        .collect();
    table(
        &["ID", "BACKBONE", "MODALITY", "LABELS", "SCORE", "CREATED"],
        &rows,
    )
}

/// A model's one held-out figure for lists: accuracy, R² or micro-F1.
fn score(m: &Metrics) -> String {
    match m.task.as_deref() {
        Some("regression") => format!("R² {}", num(m.r2)),
        Some("multilabel") => format!("micro-F1 {}", num(m.micro_f1)),
        _ => num(m.accuracy),
    }
}

/// One line per input: the input and its prediction — the label and its score, then the
/// other top labels; the value and its interval; or the labels above their thresholds.
pub fn predictions(inputs: &[String], predictions: &[Prediction]) -> String {
    let mut out = String::new();
    for (input, p) in inputs.iter().zip(predictions) {
        let _ = write!(out, "{input:?} → ");
        match p {
            Prediction::Class {
                label,
                score,
                top_k,
            } => {
                let others: Vec<String> = top_k
                    .iter()
                    .skip(1)
                    .map(|s| format!("{} {:.3}", s.label, s.score))
                    .collect();
                let _ = write!(out, "{label} ({score:.3})");
                if !others.is_empty() {
                    let _ = write!(out, "  [then: {}]", others.join(", "));
                }
            }
            Prediction::Value { value, interval } => {
                let _ = write!(out, "{value:.4}");
                if let Some([lo, hi]) = interval {
                    let _ = write!(out, "  [interval {lo:.4} to {hi:.4}]");
                }
            }
            Prediction::Labels { labels, scores } => {
                let shown: Vec<String> = scores
                    .iter()
                    .map(|s| format!("{} {:.3}", s.label, s.score))
                    .collect();
                let _ = write!(
                    out,
                    "{}  [scores: {}]",
                    if labels.is_empty() {
                        "(no label)".to_string()
                    } else {
                        labels.join(", ")
                    },
                    shown.join(", ")
                );
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["ID", "NAME"],
            &[
                vec!["a".into(), "x".into()],
                vec!["long".into(), "y".into()],
            ],
        );
        assert_eq!(t, "ID    NAME\na     x\nlong  y\n");
    }

    #[test]
    fn every_task_prints_its_own_prediction_and_headline() {
        let preds: Vec<Prediction> = serde_json::from_str(
            r#"[{"label":"a","score":0.9,"top_k":[{"label":"a","score":0.9},{"label":"b","score":0.1}]},
                {"value":2.5,"interval":[2.0,3.0]},
                {"labels":["x"],"scores":[{"label":"x","score":0.8},{"label":"y","score":0.2}]}]"#,
        )
        .unwrap();
        let inputs: Vec<String> = ["one", "two", "three"].map(String::from).to_vec();
        let out = predictions(&inputs, &preds);
        assert!(
            out.contains("\"one\" → a (0.900)  [then: b 0.100]"),
            "{out}"
        );
        assert!(
            out.contains("\"two\" → 2.5000  [interval 2.0000 to 3.0000]"),
            "{out}"
        );
        assert!(
            out.contains("\"three\" → x  [scores: x 0.800, y 0.200]"),
            "{out}"
        );
        let m: Metrics = serde_json::from_str(
            r#"{"task":"regression","mae":0.5,"rmse":0.7,"r2":0.9,"spearman":0.95,"baseline":{"method":"ridge","mae":1.0,"r2":0.4}}"#,
        )
        .unwrap();
        let text = metrics(&m);
        assert!(text.starts_with("MAE 0.500"), "{text}");
        assert!(
            text.contains("baseline (ridge): MAE 1.000  R² 0.400"),
            "{text}"
        );
        assert_eq!(score(&m), "R² 0.900");
    }
}
