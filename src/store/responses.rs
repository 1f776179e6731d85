//! Responses the Responses API keeps for `previous_response_id`: written once,
//! before the caller is told the response is done, read back by id, and only
//! ever by the tenant that made it.

use super::{nul_free, Store, StoreError};

/// One kept response.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct StoredResponse {
    /// `resp_…`.
    pub id: String,
    /// Whose it is: no other tenant can read or delete it.
    pub tenant: String,
    /// Unix time in milliseconds.
    pub created_at_ms: i64,
    /// The conversation up to and including the answer, as a JSON array of
    /// the gateway's turns (the caller's instructions left out: they are not
    /// carried to the next response).
    pub conversation_json: String,
    /// The response object as it was sent.
    pub response_json: String,
}

impl Store {
    /// Keeps `response`; awaited, because the caller may name it in its next
    /// request as soon as it learns the response is done.
    pub async fn insert_response(&self, response: &StoredResponse) -> Result<(), StoreError> {
        crate::with_db!(self.db(), pool => sqlx::query(
            "INSERT INTO responses (id, tenant, created_at_ms, conversation_json, response_json, bytes) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&response.id)
        .bind(&response.tenant)
        .bind(response.created_at_ms)
        .bind(nul_free(&response.conversation_json))
        .bind(nul_free(&response.response_json))
        .bind((response.conversation_json.len() + response.response_json.len()) as i64)
        .execute(pool)
        .await.map(|done| done.rows_affected()))?;
        Ok(())
    }

    /// Response `id` of `tenant`, if it is kept.
    pub async fn response(
        &self,
        id: &str,
        tenant: &str,
    ) -> Result<Option<StoredResponse>, StoreError> {
        Ok(
            crate::with_db!(self.db(), pool => sqlx::query_as::<_, StoredResponse>(
            "SELECT id, tenant, created_at_ms, conversation_json, response_json \
             FROM responses WHERE id = $1 AND tenant = $2",
        )
        .bind(nul_free(id))
        .bind(tenant)
        .fetch_optional(pool)
        .await)?,
        )
    }

    /// Forgets response `id` of `tenant`; whether there was one.
    pub async fn delete_response(&self, id: &str, tenant: &str) -> Result<bool, StoreError> {
        let deleted = crate::with_db!(self.db(), pool => sqlx::query(
            "DELETE FROM responses WHERE id = $1 AND tenant = $2",
        )
        .bind(nul_free(id))
        .bind(tenant)
        .execute(pool)
        .await.map(|done| done.rows_affected()))?;
        Ok(deleted > 0)
    }
}
