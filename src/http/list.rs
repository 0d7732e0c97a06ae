//! Lists as the OpenAI API pages them: `?limit=` (1 to 100, 20 by default) and `?after=`
//! (the `last_id` of the previous page), answered newest first as
//! `{"object": "list", "data": [...], "has_more", "first_id", "last_id"}`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiResult};
use crate::error_code::Code;
use crate::store::page::{DEFAULT_LIMIT, MAX_LIMIT};
use crate::store::{Page, PageRequest};

/// The query parameters of a request, refused with a JSON 400 when they cannot be read.
#[derive(Debug, Default)]
pub struct QueryParams(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str(query)
            .map(QueryParams)
            .map_err(|e| ApiError::new(Code::InvalidQuery, format!("unreadable query: {e}")))
    }
}

impl QueryParams {
    /// The last value given for `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `limit`: 1 to 100, [`DEFAULT_LIMIT`] when absent.
    pub fn limit(&self) -> ApiResult<u32> {
        let Some(text) = self.get("limit") else {
            return Ok(DEFAULT_LIMIT);
        };
        match text.trim().parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(ApiError::new(
                Code::InvalidQuery,
                format!("limit must be a whole number from 1 to {MAX_LIMIT}, not {text:?}"),
            )),
        }
    }

    /// `limit` and `after` (an id) of a list request.
    pub fn page(&self) -> ApiResult<PageRequest> {
        Ok(PageRequest {
            limit: self.limit()?,
            after: self.get("after").map(str::to_string),
        })
    }
}

/// The list query parameters, for the OpenAPI document.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// How many items to return, newest first.
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub limit: Option<u32>,
    /// The `last_id` of the previous page: the items that come after it.
    pub after: Option<String>,
}

/// `"list"`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ListObject {
    List,
}

/// One page of a list, newest first.
#[derive(Serialize, ToSchema)]
pub struct List<T: ToSchema> {
    pub object: ListObject,
    pub data: Vec<T>,
    /// Whether older items follow: ask again with `after` = `last_id`.
    pub has_more: bool,
    /// The id of the first item (null when the page is empty).
    pub first_id: Option<String>,
    /// The id of the last item: the `after` of the next page (null when the page is empty).
    pub last_id: Option<String>,
}

impl<T: ToSchema> List<T> {
    /// The page's items with their ids.
    pub fn new(page: Page<T>, id: impl Fn(&T) -> String) -> List<T> {
        List {
            object: ListObject::List,
            first_id: page.data.first().map(&id),
            last_id: page.data.last().map(&id),
            has_more: page.has_more,
            data: page.data,
        }
    }
}

/// The 400 for an `after` that is not one of the list's ids.
pub fn unknown_cursor(what: &str, after: Option<&str>) -> ApiError {
    ApiError::new(
        Code::InvalidCursor,
        format!(
            "after: no {what} with id {:?}; pass the last_id of the previous page",
            after.unwrap_or("")
        ),
    )
}
