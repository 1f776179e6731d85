//! Client keys made through the admin API, kept (as hashes) across restarts.

use super::{Store, StoreError};
use crate::clients::{ClientSpec, KeyOrigin};

#[derive(sqlx::FromRow)]
struct ClientRow {
    name: String,
    tenant: String,
    key_sha256: String,
    rpm: Option<i64>,
    tpm: Option<i64>,
}

fn limit(value: Option<i64>) -> Option<u32> {
    value.and_then(|n| u32::try_from(n).ok()).filter(|&n| n > 0)
}

impl Store {
    /// Every client made through the admin API.
    pub async fn clients(&self) -> Result<Vec<ClientSpec>, StoreError> {
        let rows = crate::with_db!(self.db(), pool => sqlx::query_as::<_, ClientRow>(
            "SELECT name, tenant, key_sha256, rpm, tpm FROM clients ORDER BY name",
        )
        .fetch_all(pool)
        .await)?;
        Ok(rows
            .into_iter()
            .map(|row| ClientSpec {
                name: row.name,
                tenant: row.tenant,
                key_sha256: row.key_sha256,
                rpm: limit(row.rpm),
                tpm: limit(row.tpm),
                origin: KeyOrigin::Admin,
            })
            .collect())
    }

    /// Keeps a client made through the admin API.
    pub async fn insert_client(&self, spec: &ClientSpec, at_ms: i64) -> Result<(), StoreError> {
        crate::with_db!(self.db(), pool => sqlx::query(
            "INSERT INTO clients (name, tenant, key_sha256, rpm, tpm, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&spec.name)
        .bind(&spec.tenant)
        .bind(&spec.key_sha256)
        .bind(spec.rpm.map(i64::from))
        .bind(spec.tpm.map(i64::from))
        .bind(at_ms)
        .execute(pool)
        .await.map(|done| done.rows_affected()))?;
        Ok(())
    }

    /// Forgets a client made through the admin API.
    pub async fn delete_client(&self, name: &str) -> Result<(), StoreError> {
        crate::with_db!(self.db(), pool => sqlx::query("DELETE FROM clients WHERE name = $1")
            .bind(name)
            .execute(pool)
            .await.map(|done| done.rows_affected()))?;
        Ok(())
    }
}
