//! Query parameters of the admin read APIs, checked one by one so that an error
//! names the parameter: unknown names, empty values, page sizes and cursors; and
//! the one text segment of an admin path.
//!
//! Neither may hold U+0000 (NUL, `%00` in a URL): PostgreSQL's `text` cannot, so
//! a lookup or a filter holding one failed as a server error instead of finding
//! nothing.

use super::error::{echoed, ApiError};
use axum::extract::{rejection::QueryRejection, FromRequestParts, Path, Query};
use axum::http::request::Parts;
use std::collections::HashMap;

/// Refuses `value` of parameter `name` if it holds a NUL character.
fn without_nul(name: &str, value: &str) -> Result<(), ApiError> {
    if value.contains('\0') {
        // A query's names are the caller's text too.
        let name = echoed(name);
        return Err(ApiError::invalid(
            Some(&name),
            format!("{name} must not contain a NUL character (%00)"),
        ));
    }
    Ok(())
}

/// The one text segment of an admin path (`/api/audit/requests/{id}`), decoded
/// and free of NUL characters; a refusal names the segment in the API's error
/// shape.
pub struct PathText(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathText {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(segments) = Path::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::invalid(None, format!("invalid path: {}", e.body_text())))?;
        let Ok([(name, value)]) = <[_; 1]>::try_from(segments) else {
            return Err(ApiError::invalid(None, "the path must have one parameter"));
        };
        without_nul(&name, &value)?;
        Ok(Self(value))
    }
}

/// Largest page a caller may ask for.
pub const MAX_LIMIT: i64 = 500;

/// Page size when none is asked for.
const DEFAULT_LIMIT: i64 = 50;

/// A request's query parameters, restricted to the names an endpoint accepts.
pub struct Params(HashMap<String, String>);

impl Params {
    /// Parses the query, refusing any parameter not in `allowed`.
    pub fn new(
        query: Result<Query<HashMap<String, String>>, QueryRejection>,
        allowed: &[&str],
    ) -> Result<Self, ApiError> {
        let Query(map) =
            query.map_err(|e| ApiError::invalid(None, format!("invalid query string: {e}")))?;
        for (name, value) in &map {
            without_nul(name, value)?;
        }
        if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(ApiError::invalid(
                Some(unknown),
                format!(
                    "unknown parameter {unknown:?}; expected one of {}",
                    allowed.join(", ")
                ),
            ));
        }
        Ok(Self(map))
    }

    /// A text parameter; present but empty is an error.
    pub fn text(&self, name: &str) -> Result<Option<&str>, ApiError> {
        match self.0.get(name) {
            Some(v) if v.trim().is_empty() => Err(ApiError::invalid(
                Some(name),
                format!("{name} must not be empty"),
            )),
            v => Ok(v.map(String::as_str)),
        }
    }

    /// A parameter parsed as `T` (one of a fixed set of spellings, say).
    pub fn parsed<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, ApiError>
    where
        T::Err: std::fmt::Display,
    {
        self.text(name)?
            .map(|v| {
                v.parse()
                    .map_err(|e| ApiError::invalid(Some(name), format!("{name}: {e}")))
            })
            .transpose()
    }

    /// `limit`: a page size from 1 to [`MAX_LIMIT`].
    pub fn limit(&self) -> Result<i64, ApiError> {
        match self.0.get("limit") {
            None => Ok(DEFAULT_LIMIT),
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    ApiError::invalid(
                        Some("limit"),
                        format!("limit must be a whole number from 1 to {MAX_LIMIT}"),
                    )
                }),
        }
    }

    /// `before`: a cursor from a previous page.
    pub fn before(&self) -> Result<Option<i64>, ApiError> {
        self.0
            .get("before")
            .map(|v| {
                v.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    ApiError::invalid(
                        Some("before"),
                        "before must be a cursor from a previous page",
                    )
                })
            })
            .transpose()
    }
}
