//! Submitting a job (`POST /v1/jobs`): every check a request must pass before it is queued,
//! in the order clients see them, and the backbone it is queued with.

use super::{JobSpec, Queue};
use crate::backbones::Modality;
use crate::backbones::catalog::{Catalog, is_composite};
use crate::error_code::{Code, ErrorCode};
use crate::store::StoreError;
use crate::store::datasets::DatasetRecord;
use crate::store::jobs::JobRecord;
use crate::train::BackboneChoice;
use crate::train::budget::{BackboneQuery, choose_backbone};
use crate::train::hyper::DataProfile;

/// Why a job was not queued. Every message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("{0}")]
    InvalidHyperparameter(String),
    #[error("{0}")]
    InvalidValidation(String),
    #[error("{0}")]
    InvalidWebhookUrl(String),
    #[error("time_budget_s must be at least 1 second (or leave it out for no cap)")]
    InvalidTimeBudget,
    #[error("no dataset with id {0:?}; list them with GET /v1/datasets")]
    DatasetNotFound(String),
    #[error("unknown backbone {backbone:?}; use \"auto\" or one of {known:?}")]
    UnknownBackbone {
        backbone: String,
        known: Vec<&'static str>,
    },
    #[error(
        "backbone {backbone:?} is for {} data but dataset {dataset_id} holds {} examples; use \"auto\" or a {} backbone",
        .backbone_modality.as_str(),
        .dataset_modality.as_str(),
        .dataset_modality.as_str()
    )]
    ModalityMismatch {
        backbone: String,
        backbone_modality: Modality,
        dataset_id: String,
        dataset_modality: Modality,
    },
    #[error(
        "backbone {0:?} is not installed on this server; the operator must run scripts/fetch-backbones.sh"
    )]
    BackboneUnavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ErrorCode for SubmitError {
    fn code(&self) -> Code {
        match self {
            SubmitError::InvalidHyperparameter(_) => Code::InvalidHyperparameter,
            SubmitError::InvalidValidation(_) => Code::InvalidValidation,
            SubmitError::InvalidWebhookUrl(_) => Code::InvalidWebhookUrl,
            SubmitError::InvalidTimeBudget => Code::InvalidTimeBudget,
            SubmitError::DatasetNotFound(_) => Code::DatasetNotFound,
            SubmitError::UnknownBackbone { .. } => Code::UnknownBackbone,
            SubmitError::ModalityMismatch { .. } => Code::BackboneModalityMismatch,
            SubmitError::BackboneUnavailable(_) => Code::BackboneUnavailable,
            SubmitError::Store(e) => e.code(),
        }
    }
}

/// Checks a parsed request for `tenant` and queues it: hyperparameters, validation, webhook
/// target, time budget, then the dataset and the backbone it would train with.
pub async fn submit(
    queue: &Queue,
    catalog: &Catalog,
    tenant: &str,
    spec: &JobSpec,
) -> Result<JobRecord, SubmitError> {
    spec.hyperparameters
        .validate()
        .map_err(|e| SubmitError::InvalidHyperparameter(e.to_string()))?;
    if let Some(v) = &spec.validation {
        v.validate()
            .map_err(|e| SubmitError::InvalidValidation(e.to_string()))?;
    }
    if let Some(url) = &spec.webhook_url {
        queue
            .webhooks()
            .check_target(url)
            .await
            .map_err(SubmitError::InvalidWebhookUrl)?;
    }
    if spec.time_budget_s == Some(0) {
        return Err(SubmitError::InvalidTimeBudget);
    }
    let dataset = queue
        .db
        .get_dataset(tenant, &spec.dataset_id)
        .await?
        .ok_or_else(|| SubmitError::DatasetNotFound(spec.dataset_id.clone()))?;
    let choice = resolve_backbone(catalog, spec, &dataset);
    let backbone = choice.id.clone();
    let Some(info) = catalog.info(&backbone) else {
        let known = catalog.list().iter().map(|b| b.id).collect();
        return Err(SubmitError::UnknownBackbone { backbone, known });
    };
    if info.modality != dataset.modality {
        return Err(SubmitError::ModalityMismatch {
            backbone,
            backbone_modality: info.modality,
            dataset_id: dataset.id,
            dataset_modality: dataset.modality,
        });
    }
    if !info.available {
        return Err(SubmitError::BackboneUnavailable(backbone));
    }
    if is_composite(&backbone) && spec.hyperparameters.finetune_epochs.is_some_and(|e| e > 0) {
        return Err(SubmitError::InvalidHyperparameter(format!(
            "backbone {backbone:?} is a composite of frozen backbones and cannot be fine-tuned; leave finetune_epochs out (or 0), or choose one of its parts"
        )));
    }
    // `None`: the dataset was deleted between the check above and the insert.
    let job = queue
        .enqueue(tenant, spec, &choice)
        .await?
        .ok_or_else(|| SubmitError::DatasetNotFound(spec.dataset_id.clone()))?;
    tracing::info!(job = %job.id, dataset = %dataset.id, "job queued");
    Ok(job)
}

/// The backbone a job trains, decided here once ([`choose_backbone`]): the one asked for,
/// or for `"auto"` the text default or the largest installed image variant whose estimated
/// time fits the budget. The reason is stored with the job and recorded with its recipe.
pub fn resolve_backbone(
    catalog: &Catalog,
    spec: &JobSpec,
    dataset: &DatasetRecord,
) -> BackboneChoice {
    let counts: Vec<usize> = dataset
        .labels
        .iter()
        .map(|l| dataset.label_counts.get(l).copied().unwrap_or(0))
        .collect();
    let data = DataProfile::of_counts(dataset.modality, &counts);
    choose_backbone(
        &BackboneQuery {
            requested: &spec.backbone,
            default_id: catalog.default_for(dataset.modality),
            data: &data,
            hyperparameters: &spec.hyperparameters,
            validation: spec.validation.as_ref(),
            time_budget_s: spec.time_budget_s,
        },
        |id| catalog.info(id).is_some_and(|b| b.available),
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn dataset(modality: Modality) -> DatasetRecord {
        DatasetRecord {
            id: "d1".into(),
            name: "d".into(),
            modality,
            task: crate::datasets::Task::Classification,
            num_examples: 10,
            labels: vec!["a".into(), "b".into()],
            label_counts: Default::default(),
            target_summary: None,
            warnings: Vec::new(),
            format: "csv".into(),
            created_at: String::new(),
            tenant: String::new(),
        }
    }

    fn spec(backbone: &str) -> JobSpec {
        serde_json::from_value(serde_json::json!({"dataset_id": "d1", "backbone": backbone}))
            .unwrap()
    }

    #[test]
    fn auto_is_the_catalogue_default_for_the_dataset_modality() {
        let catalog = Catalog::new(Path::new("/nonexistent"));
        for m in [Modality::Text, Modality::Image] {
            assert_eq!(
                resolve_backbone(&catalog, &spec("auto"), &dataset(m)).id,
                catalog.default_for(m)
            );
        }
        let asked = resolve_backbone(
            &catalog,
            &spec("efficientnet-lite2"),
            &dataset(Modality::Image),
        );
        assert_eq!(asked.id, "efficientnet-lite2");
    }

    #[test]
    fn errors_name_their_code_and_the_fix() {
        let e = SubmitError::ModalityMismatch {
            backbone: "minilm-l6".into(),
            backbone_modality: Modality::Text,
            dataset_id: "d1".into(),
            dataset_modality: Modality::Image,
        };
        assert_eq!(e.code(), Code::BackboneModalityMismatch);
        assert_eq!(
            e.to_string(),
            "backbone \"minilm-l6\" is for text data but dataset d1 holds image examples; use \"auto\" or a image backbone"
        );
        let e = SubmitError::UnknownBackbone {
            backbone: "x".into(),
            known: vec!["a", "b"],
        };
        assert_eq!(
            (e.code(), e.to_string().as_str()),
            (
                Code::UnknownBackbone,
                "unknown backbone \"x\"; use \"auto\" or one of [\"a\", \"b\"]"
            )
        );
        assert_eq!(
            SubmitError::BackboneUnavailable("b".into()).code().status(),
            503
        );
    }
}
