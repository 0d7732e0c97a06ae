//! The lexical model for text: multinomial logistic regression on TF-IDF of words and word
//! pairs, its strength chosen by inner cross-validation like the default head. A sentence
//! embedding smooths words away; on data where the exact words decide (spam vocabulary,
//! product codes, names, topic jargon) a bag of words knows what the embedding lost. The
//! model's probabilities are blended with the transfer model's when the cross-validated
//! predictions say the blend is better (see [`super::select::choose_blend`]); on the public
//! benchmark this lifted spam at 64 per class from 0.90 (linear probe) to 0.96.
//!
//! Hand-written because it is the recipe: a few thousand sparse rows, fitted in
//! milliseconds by [`super::logreg`], with the vocabulary and idf fitted on training rows
//! only so that the cross-validated estimate stays honest.

use std::collections::HashMap;

use super::logreg::{LinearModel, Problem};

/// Most terms kept (by document frequency) in a vocabulary.
pub const MAX_TERMS: usize = 8192;

/// Lower-cased alphanumeric words and the pairs of adjacent words.
pub fn tokens(text: &str) -> Vec<String> {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect();
    let mut out = words.clone();
    out.extend(words.windows(2).map(|w| format!("{} {}", w[0], w[1])));
    out
}

/// A vocabulary with its inverse document frequencies: TF-IDF with sublinear tf,
/// smoothed idf and L2-normalised rows (scikit-learn's `TfidfVectorizer(sublinear_tf=True)`).
#[derive(Clone, Debug)]
pub struct Lexicon {
    pub terms: Vec<String>,
    pub idf: Vec<f32>,
    index: HashMap<String, usize>,
}

impl Lexicon {
    /// The `max_terms` most frequent terms of documents `rows` (ties by term), and their idf.
    pub fn fit(docs: &[Vec<String>], rows: &[usize], max_terms: usize) -> Lexicon {
        let mut df: HashMap<&str, usize> = HashMap::new();
        for &i in rows {
            let mut seen: Vec<&str> = docs[i].iter().map(String::as_str).collect();
            seen.sort_unstable();
            seen.dedup();
            for t in seen {
                *df.entry(t).or_insert(0) += 1;
            }
        }
        let mut vocab: Vec<(&str, usize)> = df.into_iter().collect();
        vocab.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        vocab.truncate(max_terms);
        let n = rows.len() as f32;
        let idf = vocab
            .iter()
            .map(|(_, d)| ((1.0 + n) / (1.0 + *d as f32)).ln() + 1.0)
            .collect();
        Lexicon::from_parts(vocab.iter().map(|(t, _)| t.to_string()).collect(), idf)
    }

    /// A stored vocabulary (terms and idf in the same order).
    pub fn from_parts(terms: Vec<String>, idf: Vec<f32>) -> Lexicon {
        let index = terms
            .iter()
            .enumerate()
            .map(|(j, t)| (t.clone(), j))
            .collect();
        Lexicon { terms, idf, index }
    }

    /// Columns of the vectors: one per term, at least one.
    pub fn dims(&self) -> usize {
        self.terms.len().max(1)
    }

    /// The TF-IDF vector of one document.
    pub fn vector(&self, doc: &[String]) -> Vec<f32> {
        let mut row = vec![0f32; self.dims()];
        let mut counts: HashMap<usize, f32> = HashMap::new();
        for t in doc {
            if let Some(&j) = self.index.get(t.as_str()) {
                *counts.entry(j).or_insert(0.0) += 1.0;
            }
        }
        for (j, count) in counts {
            row[j] = (1.0 + count.ln()) * self.idf[j];
        }
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|x| *x /= norm);
        }
        row
    }

    /// The vectors of documents `rows`, row-major `[rows.len(), dims]`.
    pub fn matrix(&self, docs: &[Vec<String>], rows: &[usize]) -> Vec<f32> {
        rows.iter().flat_map(|&i| self.vector(&docs[i])).collect()
    }
}

/// A fitted lexical model.
#[derive(Clone, Debug)]
pub struct LexicalModel {
    pub lexicon: Lexicon,
    pub linear: LinearModel,
    /// The strength the inner cross-validation chose (NaN for a stored model).
    pub c: f64,
}

impl LexicalModel {
    /// Fits on documents `rows` (vocabulary, idf and weights from them only), with `C` chosen
    /// by stratified cross-validation on the same rows; `row_weights` as for the head.
    pub fn fit(
        docs: &[Vec<String>],
        labels: &[usize],
        classes: usize,
        rows: &[usize],
        row_weights: Option<&[f32]>,
        seed: u64,
    ) -> LexicalModel {
        let lexicon = Lexicon::fit(docs, rows, MAX_TERMS);
        let x = lexicon.matrix(docs, rows);
        let y: Vec<usize> = rows.iter().map(|&i| labels[i]).collect();
        let problem = Problem {
            x: &x,
            d: lexicon.dims(),
            y: &y,
            classes,
            weights: row_weights,
        };
        let c = problem.choose_c(seed ^ 0x1e71).c;
        let linear = problem.fit(c, None);
        LexicalModel { lexicon, linear, c }
    }

    /// A stored model: its terms, and the `idf` `[terms]`, `weight` `[classes, terms]`,
    /// `bias` `[classes]` values; `None` when the shapes disagree.
    pub fn from_stored(
        terms: Vec<String>,
        idf: Vec<f32>,
        weight: Vec<f32>,
        bias: Vec<f32>,
    ) -> Option<LexicalModel> {
        let lexicon = Lexicon::from_parts(terms, idf);
        let (d, classes) = (lexicon.dims(), bias.len());
        let consistent = lexicon.idf.len() == d
            && (lexicon.terms.len() == d || lexicon.terms.is_empty())
            && weight.len() == classes * d;
        consistent.then_some(LexicalModel {
            lexicon,
            linear: LinearModel {
                weight,
                bias,
                classes,
                d,
            },
            c: f64::NAN,
        })
    }

    /// Logits for one text.
    pub fn text_logits(&self, text: &str) -> Vec<f32> {
        self.logits(&tokens(text))
    }

    /// Logits for one document.
    pub fn logits(&self, doc: &[String]) -> Vec<f32> {
        self.linear
            .logits(&self.lexicon.vector(doc))
            .into_iter()
            .map(|v| v as f32)
            .collect()
    }
}

/// `log(w · softmax(a) + (1 − w) · softmax(b))` per row: the blend's log-probabilities, which
/// serve as its logits (calibration, metrics and suspects read them like any logits).
pub fn blend_logits(a: &[Vec<f32>], b: &[Vec<f32>], w: f64) -> Vec<Vec<f32>> {
    a.iter()
        .zip(b)
        .map(|(la, lb)| blend_row(la, lb, w))
        .collect()
}

/// [`blend_logits`] for one row.
pub fn blend_row(a: &[f32], b: &[f32], w: f64) -> Vec<f32> {
    let (pa, pb) = (softmax(a), softmax(b));
    pa.iter()
        .zip(&pb)
        .map(|(x, y)| (w * x + (1.0 - w) * y).max(1e-30).ln() as f32)
        .collect()
}

fn softmax(l: &[f32]) -> Vec<f64> {
    let max = l.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let e: Vec<f64> = l.iter().map(|&v| (v as f64 - max).exp()).collect();
    let z: f64 = e.iter().sum();
    e.into_iter().map(|v| v / z).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(texts: &[&str]) -> Vec<Vec<String>> {
        texts.iter().map(|t| tokens(t)).collect()
    }

    #[test]
    fn vectors_are_normalised_and_the_vocabulary_comes_from_training_rows_only() {
        let d = docs(&["red apple", "green apple", "blue sky"]);
        let lex = Lexicon::fit(&d, &[0, 1], MAX_TERMS);
        for doc in &d[..2] {
            let norm: f32 = lex.vector(doc).iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5);
        }
        // "blue sky" shares no term with the training rows: an all-zero row.
        assert!(lex.vector(&d[2]).iter().all(|v| *v == 0.0));
        assert_eq!(tokens("Red, apple!"), vec!["red", "apple", "red apple"]);
        let stored = Lexicon::from_parts(lex.terms.clone(), lex.idf.clone());
        assert_eq!(stored.vector(&d[0]), lex.vector(&d[0]));
    }

    #[test]
    fn a_keyword_task_is_learned_from_words_the_model_has_never_seen_together() {
        // Class 1 iff the text holds "refund"; the rest is shared filler.
        // Three fillers against two classes: every filler comes with both.
        let filler = ["the order", "my parcel came", "a question about"];
        let mut texts = Vec::new();
        let mut labels = Vec::new();
        for i in 0..40 {
            let base = filler[i % filler.len()];
            if i % 2 == 0 {
                texts.push(format!("{base} refund please"));
                labels.push(1);
            } else {
                texts.push(format!("{base} thanks"));
                labels.push(0);
            }
        }
        let d: Vec<Vec<String>> = texts.iter().map(|t| tokens(t)).collect();
        let rows: Vec<usize> = (0..40).collect();
        let m = LexicalModel::fit(&d, &labels, 2, &rows, None, 0);
        let yes = m.text_logits("about my order: refund");
        let no = m.text_logits("about my order, thanks");
        assert!(yes[1] > yes[0] && no[0] > no[1], "{yes:?} {no:?}");
    }

    #[test]
    fn blends_are_log_probabilities_between_their_parts() {
        let a = vec![vec![2.0f32, 0.0]];
        let b = vec![vec![0.0f32, 2.0]];
        let mid = blend_logits(&a, &b, 0.5);
        let p: Vec<f64> = mid[0].iter().map(|&v| (v as f64).exp()).collect();
        assert!((p[0] - 0.5).abs() < 1e-6 && (p[0] + p[1] - 1.0).abs() < 1e-6);
        let all_a = blend_logits(&a, &b, 1.0);
        assert!(((all_a[0][0] as f64).exp() - softmax(&a[0])[0]).abs() < 1e-6);
    }
}
