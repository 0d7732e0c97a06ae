//! Keyset pagination of the list queries, newest first: a page is the `limit` rows that
//! sort after the cursor on `(created_at, id)` descending (job events: on their sequence
//! number), read with one row more to know whether another page follows.

use sqlx::any::AnyRow;

use super::{Db, StoreResult};

/// Most rows one page may hold.
pub const MAX_LIMIT: u32 = 100;
/// Rows per page when the request does not say.
pub const DEFAULT_LIMIT: u32 = 20;

/// Which page to read: at most `limit` rows after the row `after` (an id), newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: u32,
    pub after: Option<String>,
}

impl Default for PageRequest {
    fn default() -> Self {
        PageRequest {
            limit: DEFAULT_LIMIT,
            after: None,
        }
    }
}

/// One page of rows, newest first, and whether older rows follow it.
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub has_more: bool,
}

impl<T> Page<T> {
    /// Keeps `limit` of the `limit + 1` rows read; the extra one says that more follow.
    pub fn from_rows(mut data: Vec<T>, limit: u32) -> Page<T> {
        let has_more = data.len() > limit as usize;
        data.truncate(limit as usize);
        Page { data, has_more }
    }

    pub fn try_map<U, E>(self, f: impl FnMut(T) -> Result<U, E>) -> Result<Page<U>, E> {
        Ok(Page {
            data: self.data.into_iter().map(f).collect::<Result<_, _>>()?,
            has_more: self.has_more,
        })
    }
}

/// A table listed per tenant, newest first; `filter` is an optional `column = value`.
pub(crate) struct Listing<'a> {
    pub table: &'static str,
    pub tenant: &'a str,
    pub filter: Option<(&'static str, &'a str)>,
}

impl Db {
    /// A page of `listing`'s rows, or `None` when `after` names no row of this tenant.
    pub(crate) async fn page_rows(
        &self,
        listing: &Listing<'_>,
        page: &PageRequest,
    ) -> StoreResult<Option<Page<AnyRow>>> {
        let table = listing.table;
        let cursor: Option<String> = match &page.after {
            None => None,
            Some(id) => {
                let sql = format!("SELECT created_at FROM {table} WHERE id = $1 AND tenant = $2");
                let found = sqlx::query_scalar(&sql)
                    .bind(id)
                    .bind(listing.tenant)
                    .fetch_optional(&self.pool)
                    .await?;
                match found {
                    Some(at) => Some(at),
                    None => return Ok(None),
                }
            }
        };
        // Numbered parameters: $2 is bound (and unused) when there is no filter.
        let filter = listing
            .filter
            .map_or(String::new(), |(column, _)| format!("AND {column} = $2"));
        let sql = format!(
            "SELECT * FROM {table} WHERE tenant = $1 {filter}
             AND ($3 IS NULL OR created_at < $3 OR (created_at = $3 AND id < $4))
             ORDER BY created_at DESC, id DESC LIMIT $5"
        );
        let rows = sqlx::query(&sql)
            .bind(listing.tenant)
            .bind(listing.filter.map_or("", |(_, value)| value))
            .bind(cursor)
            .bind(page.after.as_deref())
            .bind(i64::from(page.limit) + 1)
            .fetch_all(&self.pool)
            .await?;
        Ok(Some(Page::from_rows(rows, page.limit)))
    }
}
