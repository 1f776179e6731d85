//! Client keys: who may call `/v1`, as which tenant, and how fast.
//!
//! A key is only ever kept as its SHA-256, so neither the config file nor the
//! database holds one. The tenant comes from the key, never from a header, so one
//! client can neither read nor fill another's cache. With no key at all (the
//! demo), `/v1` is open and single-tenant.
//!
//! - `limiter`: the requests- and tokens-per-minute buckets, on an injected clock.

mod limiter;

pub use limiter::{Limit, Limited, Limiter, Spent};

use crate::clock::SharedClock;
use crate::config::ClientConfig;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

crate::spelled! {
    /// Where a client key was defined.
    pub enum KeyOrigin {
        /// `[[clients]]` in the config file: changed only there.
        Config => "config",
        /// Made through the admin API and kept in the database.
        Admin => "admin",
    }
}

/// What a client is allowed, as configured or made.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ClientSpec {
    /// Who the client is.
    pub name: String,
    /// The tenant its requests belong to.
    pub tenant: String,
    /// The SHA-256 of its key, lower-case hex.
    #[serde(skip)]
    pub key_sha256: String,
    /// Requests per minute; `None` for no limit.
    pub rpm: Option<u32>,
    /// Tokens per minute; `None` for no limit.
    pub tpm: Option<u32>,
    /// Where it was defined.
    pub origin: KeyOrigin,
}

impl From<&ClientConfig> for ClientSpec {
    fn from(config: &ClientConfig) -> Self {
        Self {
            name: config.name.clone(),
            tenant: config.tenant.clone(),
            key_sha256: config.key_sha256.clone(),
            rpm: config.rpm,
            tpm: config.tpm,
            origin: KeyOrigin::Config,
        }
    }
}

/// A client as the admin API lists it: what it is allowed, and what is left.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ClientStatus {
    /// What it is allowed.
    #[serde(flatten)]
    pub spec: ClientSpec,
    /// Requests left this minute; `None` without a request limit.
    pub remaining_requests: Option<u64>,
    /// Tokens left this minute; `None` without a token limit.
    pub remaining_tokens: Option<u64>,
}

/// Why a client could not be added or removed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClientError {
    /// The name is taken.
    #[error("a client named {0:?} exists")]
    Duplicate(String),
    /// No such client.
    #[error("no client is named {0:?}")]
    Unknown(String),
    /// It is defined in the config file.
    #[error("client {0:?} is defined in the config file; remove it there")]
    FromConfig(String),
}

/// One client with its limits' state.
pub struct Client {
    spec: ClientSpec,
    limiter: Mutex<Limiter>,
    clock: SharedClock,
}

impl Client {
    /// Who it is.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Its tenant.
    pub fn tenant(&self) -> &str {
        &self.spec.tenant
    }

    fn limiter(&self) -> std::sync::MutexGuard<'_, Limiter> {
        self.limiter.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits one request, or says which limit refuses it.
    pub fn admit(&self) -> Result<(), Limited> {
        self.limiter().admit(self.clock.now())
    }

    /// Charges what an answer spent.
    pub fn charge(&self, tokens: u64) {
        self.limiter().charge(self.clock.now(), tokens);
    }

    /// What is left of its limits now: (requests, tokens).
    pub fn remaining(&self) -> (Option<u64>, Option<u64>) {
        self.limiter().remaining(self.clock.now())
    }

    /// What it is allowed.
    pub fn spec(&self) -> &ClientSpec {
        &self.spec
    }
}

/// The SHA-256 of a key, lower-case hex.
pub fn hash_key(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new random key (256 bits), shown once to whoever made it.
pub fn new_key() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sk-chaosai-{hex}")
}

/// Every client, found by its key's hash.
pub struct Clients {
    by_hash: RwLock<HashMap<String, Arc<Client>>>,
    clock: SharedClock,
    /// Held across a change of the key set and its write to the store, and
    /// across a sync with the store, so a sync never sees one without the other.
    changes: tokio::sync::Mutex<()>,
}

impl Clients {
    /// The clients of `specs`, their buckets full.
    pub fn new(specs: impl IntoIterator<Item = ClientSpec>, clock: SharedClock) -> Self {
        let clients = Self {
            by_hash: RwLock::new(HashMap::new()),
            clock,
            changes: tokio::sync::Mutex::new(()),
        };
        for spec in specs {
            // Config validation already refused duplicates; a database row that
            // repeats a config name loses to the file.
            let _ = clients.add(spec);
        }
        clients
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Client>>> {
        self.by_hash.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Client>>> {
        self.by_hash.write().unwrap_or_else(|e| e.into_inner())
    }

    /// How many clients there are.
    pub fn count(&self) -> usize {
        self.read().len()
    }

    /// Whether no key exists: `/v1` is then open.
    pub fn is_open(&self) -> bool {
        self.read().is_empty()
    }

    /// The client whose key this is.
    pub fn find(&self, key: &str) -> Option<Arc<Client>> {
        self.read().get(&hash_key(key)).cloned()
    }

    /// Adds a client.
    pub fn add(&self, spec: ClientSpec) -> Result<(), ClientError> {
        let mut clients = self.write();
        if clients.values().any(|c| c.spec.name == spec.name)
            || clients.contains_key(&spec.key_sha256)
        {
            return Err(ClientError::Duplicate(spec.name));
        }
        self.insert(&mut clients, spec);
        Ok(())
    }

    fn insert(&self, clients: &mut HashMap<String, Arc<Client>>, spec: ClientSpec) {
        let limiter = Limiter::new(spec.rpm, spec.tpm, self.clock.now());
        clients.insert(
            spec.key_sha256.clone(),
            Arc::new(Client {
                spec,
                limiter: Mutex::new(limiter),
                clock: self.clock.clone(),
            }),
        );
    }

    /// Waits for, then holds, the right to change the key set: the admin API
    /// holds it until its change is in the store, a sync while it reads the
    /// store and applies what it read.
    pub async fn changing(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.changes.lock().await
    }

    /// Makes the admin-made clients those `stored` in the database, which
    /// replicas share, so a key made or revoked through one replica is in force
    /// on all. A client whose spec is unchanged keeps its rate-limit buckets;
    /// the config file's clients are not touched, and a row repeating one of
    /// their names or keys loses to the file. Linear in the clients, and the
    /// write lock (which key lookups wait on) is taken only when something
    /// changed. Returns whether anything did.
    pub fn sync(&self, stored: &[ClientSpec]) -> bool {
        let wanted: HashMap<&str, &ClientSpec> = stored
            .iter()
            .map(|spec| (spec.key_sha256.as_str(), spec))
            .collect();
        let stays = |c: &Client| {
            c.spec.origin == KeyOrigin::Config
                || wanted.get(c.spec.key_sha256.as_str()) == Some(&&c.spec)
        };
        {
            let clients = self.read();
            let config: HashSet<&str> = clients
                .values()
                .filter(|c| c.spec.origin == KeyOrigin::Config)
                .map(|c| c.spec.name.as_str())
                .collect();
            if clients.values().all(|c| stays(c))
                && stored.iter().all(|spec| {
                    clients.contains_key(&spec.key_sha256) || config.contains(spec.name.as_str())
                })
            {
                return false;
            }
        }
        let mut clients = self.write();
        clients.retain(|_, c| stays(c));
        let mut names: HashSet<String> = clients.values().map(|c| c.spec.name.clone()).collect();
        for spec in stored {
            if !clients.contains_key(&spec.key_sha256) && names.insert(spec.name.clone()) {
                self.insert(&mut clients, spec.clone());
            }
        }
        true
    }

    /// Removes a client made through the admin API.
    pub fn remove(&self, name: &str) -> Result<ClientSpec, ClientError> {
        let mut clients = self.write();
        let hash = clients
            .iter()
            .find(|(_, c)| c.spec.name == name)
            .map(|(hash, c)| (hash.clone(), c.spec.origin))
            .ok_or_else(|| ClientError::Unknown(name.to_string()))?;
        if hash.1 == KeyOrigin::Config {
            return Err(ClientError::FromConfig(name.to_string()));
        }
        Ok(clients
            .remove(&hash.0)
            .map(|c| c.spec.clone())
            .expect("found above"))
    }

    /// What each client spent through this replica since the last call, for
    /// the other replicas to take in (clients that spent nothing are left out).
    pub fn take_spent(&self) -> Vec<(String, Spent)> {
        self.read()
            .values()
            .filter_map(|c| {
                let spent = c.limiter().take_unshared();
                (spent != Spent::default()).then(|| (c.spec.name.clone(), spent))
            })
            .collect()
    }

    /// Takes in what clients spent through another replica, by name; a client
    /// this replica does not know (not synced yet, or removed) is skipped.
    pub fn absorb<'a>(&self, spent: impl IntoIterator<Item = (&'a str, Spent)>) {
        let clients = self.read();
        let by_name: HashMap<&str, &Arc<Client>> = clients
            .values()
            .map(|c| (c.spec.name.as_str(), c))
            .collect();
        let now = self.clock.now();
        for (name, spent) in spent {
            if let Some(client) = by_name.get(name) {
                client.limiter().absorb(now, spent);
            }
        }
    }

    /// Every client, by name, with what is left of its limits here.
    pub fn list_remaining(&self) -> Vec<ClientStatus> {
        let mut all: Vec<_> = self
            .read()
            .values()
            .map(|c| {
                let (remaining_requests, remaining_tokens) = c.remaining();
                ClientStatus {
                    spec: c.spec.clone(),
                    remaining_requests,
                    remaining_tokens,
                }
            })
            .collect();
        all.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        all
    }

    /// Every client, by name.
    pub fn list(&self) -> Vec<ClientSpec> {
        let mut specs: Vec<ClientSpec> = self.read().values().map(|c| c.spec.clone()).collect();
        specs.sort_by(|a, b| a.name.cmp(&b.name));
        specs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::time::Duration;

    fn spec(name: &str, key: &str, origin: KeyOrigin) -> ClientSpec {
        ClientSpec {
            name: name.into(),
            tenant: format!("{name}-tenant"),
            key_sha256: hash_key(key),
            rpm: Some(1),
            tpm: None,
            origin,
        }
    }

    #[test]
    fn a_key_finds_its_client_and_only_the_hash_is_kept() {
        let clock = ManualClock::new();
        let clients = Clients::new(
            [spec("acme", "key-a", KeyOrigin::Config)],
            clock.clone() as SharedClock,
        );
        assert!(!clients.is_open());
        let acme = clients.find("key-a").unwrap();
        assert_eq!(acme.tenant(), "acme-tenant");
        assert!(clients.find("key-b").is_none());
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(acme.admit().is_ok());
        assert!(acme.admit().is_err());
        clock.advance(Duration::from_secs(60));
        assert!(acme.admit().is_ok());
    }

    #[test]
    fn config_keys_are_not_removed_through_the_api() {
        let clients = Clients::new(
            [spec("acme", "a", KeyOrigin::Config)],
            ManualClock::new() as SharedClock,
        );
        assert_eq!(
            clients.add(spec("acme", "b", KeyOrigin::Admin)),
            Err(ClientError::Duplicate("acme".into()))
        );
        clients.add(spec("beta", "b", KeyOrigin::Admin)).unwrap();
        assert_eq!(
            clients.remove("acme"),
            Err(ClientError::FromConfig("acme".into()))
        );
        assert_eq!(clients.remove("beta").unwrap().name, "beta");
        assert!(clients.find("b").is_none());
        assert!(new_key().starts_with("sk-chaosai-"));
        assert_ne!(new_key(), new_key());
    }

    #[test]
    fn a_sync_takes_the_stores_admin_clients_and_keeps_unchanged_buckets() {
        let clock = ManualClock::new();
        let clients = Clients::new(
            [
                spec("acme", "a", KeyOrigin::Config),
                spec("beta", "b", KeyOrigin::Admin),
                spec("gone", "g", KeyOrigin::Admin),
            ],
            clock.clone() as SharedClock,
        );
        let beta = clients.find("b").unwrap();
        assert!(beta.admit().is_ok());
        // The store: beta unchanged, gone revoked elsewhere, new made elsewhere,
        // and a row that repeats the config's name, which loses to the file.
        let stored = [
            spec("beta", "b", KeyOrigin::Admin),
            spec("new", "n", KeyOrigin::Admin),
            spec("acme", "other", KeyOrigin::Admin),
        ];
        assert!(clients.sync(&stored));
        assert!(clients.find("g").is_none(), "revoked elsewhere");
        assert_eq!(clients.find("n").unwrap().name(), "new");
        assert!(clients.find("a").is_some() && clients.find("other").is_none());
        assert!(
            clients.find("b").unwrap().admit().is_err(),
            "beta's spent bucket was kept, not refilled"
        );
        assert!(!clients.sync(&stored), "nothing changed the second time");
        // Made again elsewhere under the same name with a new key: the new key only.
        assert!(clients.sync(&[spec("beta", "b2", KeyOrigin::Admin)]));
        assert!(clients.find("b").is_none() && clients.find("b2").is_some());
        // Every admin client revoked: the config's key still guards /v1.
        assert!(clients.sync(&[]));
        assert!(!clients.is_open());
        assert_eq!(clients.list().len(), 1);
    }
}
