//! Query parameters of the admin read APIs, checked one by one so that an error
//! names the parameter: unknown names, empty values, page sizes and cursors.

use super::error::ApiError;
use axum::extract::{rejection::QueryRejection, Query};
use std::collections::HashMap;

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
