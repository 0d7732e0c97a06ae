//! The OpenAPI document, generated as the router is built (`super::router`): each route is
//! registered from its handler's `#[utoipa::path]` annotation, whose types give the
//! schemas, so the document lists exactly the routes served. It is served at
//! `/openapi.json`, and rendered at `/docs` by the Swagger UI vendored in `static/docs/`.

use std::sync::Arc;

use axum::Extension;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// What the generated paths are put into: the title, description, tags and security.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Warmstart",
        description = "Transfer learning on small datasets: upload labelled data, fine-tune a \
            pre-trained backbone, predict. Every error is `{\"error\": {\"code\", \"message\"}}`. \
            Lists are paged newest first with `limit` and `after` and answer \
            `{\"object\": \"list\", \"data\", \"has_more\", \"first_id\", \"last_id\"}`. \
            `/v1` routes take `Authorization: Bearer <key>` when the server has API keys \
            (`warmstart keys create`)."
    ),
    components(schemas(super::schema::ErrorBody)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "datasets", description = "Labelled data: CSV, JSONL or a ZIP of images"),
        (name = "jobs", description = "Training runs, their progress and events"),
        (name = "models", description = "Trained models: predict, download, import"),
        (name = "backbones", description = "The pre-trained networks models start from"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
    )
)]
pub struct ApiDoc;

/// The `bearer` security scheme named by `security`.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("An API key from `warmstart keys create`"))
            .build();
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The finished document as JSON, shared by the handler.
#[derive(Clone)]
pub struct Document(pub Arc<String>);

impl Document {
    pub fn new(doc: &utoipa::openapi::OpenApi) -> Document {
        Document(Arc::new(
            doc.to_pretty_json()
                .expect("the OpenAPI document serialises"),
        ))
    }
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json", body = Object)))]
pub async fn openapi(Extension(doc): Extension<Document>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.0.as_str().to_string(),
    )
}

/// The API's docs page (Swagger UI on `/openapi.json`; its assets are served from
/// `static/docs/`).
#[utoipa::path(get, path = "/docs", tag = "operations", security(()),
    responses((status = 200, description = "An HTML page", content_type = "text/html", body = String)))]
pub async fn docs() -> Html<&'static str> {
    Html(include_str!("../../static/docs/index.html"))
}
