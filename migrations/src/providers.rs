//! service_providers rows: the typed row, the configuration the operator writes, and their
//! queries.
//!
//! Rows stay raw (bind_mode, interface_version and the messaging settings as text, port as
//! integer): the gateway parses and validates them per vendor, so one bad hand-written row
//! still loads and is reported for that vendor alone.

use crate::{DbError, Secret};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

/// NOTIFY channel of the trigger in 0001: payload `{"op":"INSERT|UPDATE|DELETE","id":"<uuid>"}`.
pub const CHANNEL: &str = "vendor_mgmt_service_providers";

/// One row of vendor_mgmt.service_providers, every column. `Debug` redacts the password and
/// the client key.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct ServiceProvider {
    pub id: Uuid,
    pub instance_name: String,
    /// The operator-managed columns.
    #[sqlx(flatten)]
    pub config: ProviderConfig,
    /// Not managed by the operator: its default or a hand-set value.
    pub tls_min_version: String,
    pub owner_namespace: Option<String>,
    pub owner_name: Option<String>,
    pub owner_uid: Option<String>,
    pub owner_generation: Option<i64>,
    pub owner_fingerprint: Option<String>,
    pub config_version: i64,
    pub updated_at: DateTime<Utc>,
}

impl ServiceProvider {
    /// The resource that owns this row, if an operator manages it.
    pub fn owner(&self) -> Option<OwnerRef> {
        Some(OwnerRef {
            namespace: self.owner_namespace.clone()?,
            name: self.owner_name.clone()?,
            uid: self.owner_uid.clone()?,
        })
    }

    /// True when someone other than the operator changed the row after the operator last
    /// wrote it: its content no longer matches the fingerprint written with it.
    pub fn edited_since_owner_wrote(&self) -> bool {
        match &self.owner_fingerprint {
            Some(fp) => *fp != self.config.fingerprint(),
            None => false,
        }
    }
}

/// The columns the operator writes from an SmppVendor (spec + resolved Secrets). Columns it
/// does not manage (tls_min_version) keep their defaults or hand-set values.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct ProviderConfig {
    pub host: String,
    pub port: i32,
    pub username: String,
    pub password: Secret,
    pub system_type: String,
    pub is_active: bool,
    pub tls_enabled: bool,
    pub tls_server_name: Option<String>,
    pub tls_ca_pem: Option<String>,
    pub tls_client_cert_pem: Option<String>,
    pub tls_client_key_pem: Option<Secret>,
    pub tls_insecure_skip_verify: bool,
    pub bind_mode: String,
    pub interface_version: String,
    pub address_range: String,
    pub max_binds: i32,
    pub window_size: i32,
    pub max_messages_per_second: Option<i32>,
    pub enquire_link_interval_seconds: i32,
    pub reconnect_initial_delay_seconds: i32,
    pub reconnect_max_delay_seconds: i32,
    pub routing_priority: i32,
    pub routing_weight: i32,
    pub routing_prefixes: Vec<String>,
    pub suspended: bool,
    /// How the vendor writes ids in submit_sm_resp: a [`crate::messaging::IdFormat`] as text.
    pub message_id_submit_format: String,
    /// How the vendor writes ids in receipts: a [`crate::messaging::IdFormat`] as text.
    pub message_id_receipt_format: String,
    /// A [`crate::messaging::LongMessages`] as text.
    pub long_messages: String,
    /// A [`crate::messaging::DefaultAlphabet`] as text.
    pub default_alphabet: String,
}

impl ProviderConfig {
    /// SHA-256 over every field, length-prefixed so no two configurations collide by
    /// concatenation. Stored with the row; it reveals nothing about the password.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        let mut s = |tag: &str, v: Option<&str>| {
            h.update(tag.as_bytes());
            match v {
                None => h.update([0u8]),
                Some(v) => {
                    h.update([1u8]);
                    h.update((v.len() as u64).to_be_bytes());
                    h.update(v.as_bytes());
                }
            }
        };
        s("host", Some(&self.host));
        s("port", Some(&self.port.to_string()));
        s("username", Some(&self.username));
        s("password", Some(self.password.expose()));
        s("system_type", Some(&self.system_type));
        s("is_active", Some(&self.is_active.to_string()));
        s("tls_enabled", Some(&self.tls_enabled.to_string()));
        s("tls_server_name", self.tls_server_name.as_deref());
        s("tls_ca_pem", self.tls_ca_pem.as_deref());
        s("tls_client_cert_pem", self.tls_client_cert_pem.as_deref());
        s(
            "tls_client_key_pem",
            self.tls_client_key_pem.as_ref().map(Secret::expose),
        );
        s(
            "tls_insecure_skip_verify",
            Some(&self.tls_insecure_skip_verify.to_string()),
        );
        s("bind_mode", Some(&self.bind_mode));
        s("interface_version", Some(&self.interface_version));
        s("address_range", Some(&self.address_range));
        s("max_binds", Some(&self.max_binds.to_string()));
        s("window_size", Some(&self.window_size.to_string()));
        s(
            "mps",
            self.max_messages_per_second
                .map(|v| v.to_string())
                .as_deref(),
        );
        s(
            "enquire",
            Some(&self.enquire_link_interval_seconds.to_string()),
        );
        s(
            "reconnect_initial",
            Some(&self.reconnect_initial_delay_seconds.to_string()),
        );
        s(
            "reconnect_max",
            Some(&self.reconnect_max_delay_seconds.to_string()),
        );
        s("routing_priority", Some(&self.routing_priority.to_string()));
        s("routing_weight", Some(&self.routing_weight.to_string()));
        s(
            "routing_prefixes",
            Some(&self.routing_prefixes.len().to_string()),
        );
        for p in &self.routing_prefixes {
            s("prefix", Some(p));
        }
        s("suspended", Some(&self.suspended.to_string()));
        s(
            "message_id_submit_format",
            Some(&self.message_id_submit_format),
        );
        s(
            "message_id_receipt_format",
            Some(&self.message_id_receipt_format),
        );
        s("long_messages", Some(&self.long_messages));
        s("default_alphabet", Some(&self.default_alphabet));
        let digest = h.finalize();
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Names of the fields that differ, for the drift Event (values are never reported).
    pub fn changed_fields(&self, other: &ProviderConfig) -> Vec<&'static str> {
        let mut out = Vec::new();
        macro_rules! cmp {
            ($($f:ident),*) => { $( if self.$f != other.$f { out.push(stringify!($f)); } )* };
        }
        cmp!(
            host,
            port,
            username,
            password,
            system_type,
            is_active,
            tls_enabled,
            tls_server_name,
            tls_ca_pem,
            tls_client_cert_pem,
            tls_client_key_pem,
            tls_insecure_skip_verify,
            bind_mode,
            interface_version,
            address_range,
            max_binds,
            window_size,
            max_messages_per_second,
            enquire_link_interval_seconds,
            reconnect_initial_delay_seconds,
            reconnect_max_delay_seconds,
            routing_priority,
            routing_weight,
            routing_prefixes,
            suspended,
            message_id_submit_format,
            message_id_receipt_format,
            long_messages,
            default_alphabet
        );
        out
    }
}

/// The SmppVendor that owns a row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// An owner plus the resource generation being written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub generation: i64,
}

/// What [`upsert_owned`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum UpsertOutcome {
    /// No row had this instance_name: inserted.
    Created(ServiceProvider),
    /// The owned row was rewritten. `drift` lists the fields someone had edited by hand
    /// since the operator last wrote it (empty for an ordinary spec/Secret change).
    Updated {
        row: ServiceProvider,
        changed: Vec<&'static str>,
        drift: bool,
    },
    /// The owned row already matched.
    Unchanged(ServiceProvider),
    /// A row with this instance_name exists and no resource owns it: adopt it first.
    Unowned(ServiceProvider),
    /// Another resource owns the row; it was not touched.
    OwnedByOther {
        row: ServiceProvider,
        owner: OwnerRef,
    },
}

/// Every column, in struct order; a macro so queries stay `&'static str` (sqlx audits
/// dynamic SQL).
macro_rules! columns {
    () => {
        "id, instance_name, host, port, username, password, system_type, is_active, \
    tls_enabled, tls_server_name, tls_ca_pem, tls_client_cert_pem, tls_client_key_pem, \
    tls_insecure_skip_verify, tls_min_version, bind_mode, interface_version, address_range, \
    max_binds, window_size, max_messages_per_second, enquire_link_interval_seconds, \
    reconnect_initial_delay_seconds, reconnect_max_delay_seconds, routing_priority, \
    routing_weight, routing_prefixes, suspended, message_id_submit_format, \
    message_id_receipt_format, long_messages, default_alphabet, owner_namespace, owner_name, \
    owner_uid, owner_generation, owner_fingerprint, config_version, updated_at"
    };
}

/// Every row, ordered by instance_name.
pub async fn list_all(pool: &PgPool) -> Result<Vec<ServiceProvider>, DbError> {
    let sql = concat!(
        "SELECT ",
        columns!(),
        " FROM vendor_mgmt.service_providers ORDER BY instance_name"
    );
    Ok(sqlx::query_as(sql).fetch_all(pool).await?)
}

/// One row by id.
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<ServiceProvider>, DbError> {
    let sql = concat!(
        "SELECT ",
        columns!(),
        " FROM vendor_mgmt.service_providers WHERE id = $1"
    );
    Ok(sqlx::query_as(sql).bind(id).fetch_optional(pool).await?)
}

/// The rows among `ids` that exist (missing ids are simply absent from the answer).
pub async fn get_many(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<ServiceProvider>, DbError> {
    let sql = concat!(
        "SELECT ",
        columns!(),
        " FROM vendor_mgmt.service_providers WHERE id = ANY($1)"
    );
    Ok(sqlx::query_as(sql).bind(ids).fetch_all(pool).await?)
}

/// One row by instance_name.
pub async fn get_by_instance_name(
    pool: &PgPool,
    instance_name: &str,
) -> Result<Option<ServiceProvider>, DbError> {
    let sql = concat!(
        "SELECT ",
        columns!(),
        " FROM vendor_mgmt.service_providers WHERE instance_name = $1"
    );
    Ok(sqlx::query_as(sql)
        .bind(instance_name)
        .fetch_optional(pool)
        .await?)
}

/// Writes `config` to the row named `instance_name` on behalf of `owner`: inserts it when
/// absent, rewrites it when `owner` owns it and it differs, and otherwise leaves it alone
/// and says why. The row is locked (`FOR UPDATE`) while deciding, so concurrent writers
/// serialise and the decision holds.
pub async fn upsert_owned(
    pool: &PgPool,
    instance_name: &str,
    owner: &Owner,
    config: &ProviderConfig,
) -> Result<UpsertOutcome, DbError> {
    let fingerprint = config.fingerprint();
    // Fast path without a transaction: the periodic resync mostly finds the row as written.
    if let Some(row) = get_by_instance_name(pool, instance_name).await?
        && is_current(&row, owner, config, &fingerprint)
    {
        return Ok(UpsertOutcome::Unchanged(row));
    }
    let mut tx = pool.begin().await?;
    let sql = concat!(
        "SELECT ",
        columns!(),
        " FROM vendor_mgmt.service_providers WHERE instance_name = $1 FOR UPDATE"
    );
    let existing: Option<ServiceProvider> = sqlx::query_as(sql)
        .bind(instance_name)
        .fetch_optional(&mut *tx)
        .await?;
    let fingerprint = config.fingerprint();
    let outcome = match existing {
        None => {
            let row = insert(&mut tx, instance_name, owner, config, &fingerprint).await?;
            match row {
                Some(row) => UpsertOutcome::Created(row),
                // Lost an insert race to a concurrent writer: decide again on its row.
                None => {
                    tx.rollback().await?;
                    return Box::pin(upsert_owned(pool, instance_name, owner, config)).await;
                }
            }
        }
        Some(row) => match row.owner() {
            None => UpsertOutcome::Unowned(row),
            Some(o) if o.uid != owner.uid => UpsertOutcome::OwnedByOther { row, owner: o },
            Some(_) => {
                if is_current(&row, owner, config, &fingerprint) {
                    UpsertOutcome::Unchanged(row)
                } else {
                    let drift = row.edited_since_owner_wrote();
                    let changed = row.config.changed_fields(config);
                    let row = update(&mut tx, row.id, owner, config, &fingerprint).await?;
                    UpsertOutcome::Updated {
                        row,
                        changed,
                        drift,
                    }
                }
            }
        },
    };
    tx.commit().await?;
    Ok(outcome)
}

/// Whether `row` is owned by `owner` and already holds `config` as written for this
/// generation.
fn is_current(
    row: &ServiceProvider,
    owner: &Owner,
    config: &ProviderConfig,
    fingerprint: &str,
) -> bool {
    row.owner_uid.as_deref() == Some(owner.uid.as_str())
        && row.owner_generation == Some(owner.generation)
        && row.owner_fingerprint.as_deref() == Some(fingerprint)
        && row.owner_namespace.as_deref() == Some(owner.namespace.as_str())
        && row.owner_name.as_deref() == Some(owner.name.as_str())
        && row.config == *config
}

async fn insert(
    tx: &mut sqlx::PgConnection,
    instance_name: &str,
    owner: &Owner,
    c: &ProviderConfig,
    fingerprint: &str,
) -> Result<Option<ServiceProvider>, DbError> {
    let sql = concat!(
        "INSERT INTO vendor_mgmt.service_providers (instance_name, host, port, username, password, \
         system_type, is_active, tls_enabled, tls_server_name, tls_ca_pem, tls_client_cert_pem, \
         tls_client_key_pem, tls_insecure_skip_verify, bind_mode, interface_version, address_range, \
         max_binds, window_size, max_messages_per_second, enquire_link_interval_seconds, \
         reconnect_initial_delay_seconds, reconnect_max_delay_seconds, routing_priority, \
         routing_weight, routing_prefixes, suspended, message_id_submit_format, \
         message_id_receipt_format, long_messages, default_alphabet, owner_namespace, owner_name, \
         owner_uid, owner_generation, owner_fingerprint) \
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22,\
         $23,$24,$25,$26,$27,$28,$29,$30,$31,$32,$33,$34,$35) \
         ON CONFLICT (instance_name) DO NOTHING RETURNING ",
        columns!(),
        ""
    );
    let q = sqlx::query_as(sql).bind(instance_name);
    let q = bind_config(q, c);
    Ok(q.bind(&owner.namespace)
        .bind(&owner.name)
        .bind(&owner.uid)
        .bind(owner.generation)
        .bind(fingerprint)
        .fetch_optional(&mut *tx)
        .await?)
}

async fn update(
    tx: &mut sqlx::PgConnection,
    id: Uuid,
    owner: &Owner,
    c: &ProviderConfig,
    fingerprint: &str,
) -> Result<ServiceProvider, DbError> {
    let sql = concat!(
        "UPDATE vendor_mgmt.service_providers SET host=$2, port=$3, username=$4, password=$5, \
         system_type=$6, is_active=$7, tls_enabled=$8, tls_server_name=$9, tls_ca_pem=$10, \
         tls_client_cert_pem=$11, tls_client_key_pem=$12, tls_insecure_skip_verify=$13, \
         bind_mode=$14, interface_version=$15, address_range=$16, max_binds=$17, window_size=$18, \
         max_messages_per_second=$19, enquire_link_interval_seconds=$20, \
         reconnect_initial_delay_seconds=$21, reconnect_max_delay_seconds=$22, \
         routing_priority=$23, routing_weight=$24, routing_prefixes=$25, suspended=$26, \
         message_id_submit_format=$27, message_id_receipt_format=$28, long_messages=$29, \
         default_alphabet=$30, owner_namespace=$31, owner_name=$32, owner_uid=$33, \
         owner_generation=$34, owner_fingerprint=$35 WHERE id = $1 RETURNING ",
        columns!(),
        ""
    );
    let q = sqlx::query_as(sql).bind(id);
    let q = bind_config(q, c);
    Ok(q.bind(&owner.namespace)
        .bind(&owner.name)
        .bind(&owner.uid)
        .bind(owner.generation)
        .bind(fingerprint)
        .fetch_one(&mut *tx)
        .await?)
}

type QueryAs<'q> =
    sqlx::query::QueryAs<'q, sqlx::Postgres, ServiceProvider, sqlx::postgres::PgArguments>;

/// Binds the 29 config columns in table order (parameters 2..=30 of insert and update).
fn bind_config<'q>(q: QueryAs<'q>, c: &'q ProviderConfig) -> QueryAs<'q> {
    q.bind(&c.host)
        .bind(c.port)
        .bind(&c.username)
        .bind(&c.password)
        .bind(&c.system_type)
        .bind(c.is_active)
        .bind(c.tls_enabled)
        .bind(&c.tls_server_name)
        .bind(&c.tls_ca_pem)
        .bind(&c.tls_client_cert_pem)
        .bind(&c.tls_client_key_pem)
        .bind(c.tls_insecure_skip_verify)
        .bind(&c.bind_mode)
        .bind(&c.interface_version)
        .bind(&c.address_range)
        .bind(c.max_binds)
        .bind(c.window_size)
        .bind(c.max_messages_per_second)
        .bind(c.enquire_link_interval_seconds)
        .bind(c.reconnect_initial_delay_seconds)
        .bind(c.reconnect_max_delay_seconds)
        .bind(c.routing_priority)
        .bind(c.routing_weight)
        .bind(&c.routing_prefixes)
        .bind(c.suspended)
        .bind(&c.message_id_submit_format)
        .bind(&c.message_id_receipt_format)
        .bind(&c.long_messages)
        .bind(&c.default_alphabet)
}

/// Takes ownership of the unowned row named `instance_name` (one written by hand in SQL).
/// Only the ownership columns change; the next [`upsert_owned`] writes the configuration.
/// Returns the row, or None when no unowned row by that name exists (absent, or owned).
pub async fn adopt(
    pool: &PgPool,
    instance_name: &str,
    owner: &Owner,
) -> Result<Option<ServiceProvider>, DbError> {
    let sql = concat!(
        "UPDATE vendor_mgmt.service_providers SET owner_namespace=$2, owner_name=$3, owner_uid=$4, \
         owner_generation=$5, owner_fingerprint=NULL \
         WHERE instance_name = $1 AND owner_uid IS NULL RETURNING ",
        columns!(),
        ""
    );
    Ok(sqlx::query_as(sql)
        .bind(instance_name)
        .bind(&owner.namespace)
        .bind(&owner.name)
        .bind(&owner.uid)
        .bind(owner.generation)
        .fetch_optional(pool)
        .await?)
}

/// Moves ownership of `instance_name` from the resource `from_uid` to `owner`, when the
/// current owner no longer exists or lost a conflict. Compare-and-set on the uid, so it
/// fails (None) if ownership changed meanwhile.
pub async fn transfer(
    pool: &PgPool,
    instance_name: &str,
    from_uid: &str,
    owner: &Owner,
) -> Result<Option<ServiceProvider>, DbError> {
    let sql = concat!(
        "UPDATE vendor_mgmt.service_providers SET owner_namespace=$3, owner_name=$4, owner_uid=$5, \
         owner_generation=$6 WHERE instance_name = $1 AND owner_uid = $2 RETURNING ",
        columns!(),
        ""
    );
    Ok(sqlx::query_as(sql)
        .bind(instance_name)
        .bind(from_uid)
        .bind(&owner.namespace)
        .bind(&owner.name)
        .bind(&owner.uid)
        .bind(owner.generation)
        .fetch_optional(pool)
        .await?)
}

/// Deletes the row named `instance_name` if `owner_uid` owns it. Returns whether a row went.
pub async fn delete_owned(
    pool: &PgPool,
    instance_name: &str,
    owner_uid: &str,
) -> Result<bool, DbError> {
    let r = sqlx::query(
        "DELETE FROM vendor_mgmt.service_providers WHERE instance_name = $1 AND owner_uid = $2",
    )
    .bind(instance_name)
    .bind(owner_uid)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() > 0)
}

/// Clears ownership of the row named `instance_name` if `owner_uid` owns it, so it stays
/// and is managed by hand again. Returns whether a row was released.
pub async fn orphan(pool: &PgPool, instance_name: &str, owner_uid: &str) -> Result<bool, DbError> {
    let r = sqlx::query(
        "UPDATE vendor_mgmt.service_providers SET owner_namespace=NULL, owner_name=NULL, \
         owner_uid=NULL, owner_generation=NULL, owner_fingerprint=NULL \
         WHERE instance_name = $1 AND owner_uid = $2",
    )
    .bind(instance_name)
    .bind(owner_uid)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() > 0)
}

/// A complete, valid configuration for tests (unit tests here, and other crates' tests through
/// the `fixtures` feature): one fixture instead of a copy per test file.
#[cfg(any(test, feature = "fixtures"))]
impl ProviderConfig {
    pub fn example() -> Self {
        use crate::messaging::{DefaultAlphabet, IdFormat, LongMessages};
        ProviderConfig {
            host: "smpp.example.net".into(),
            port: 3601,
            username: "telx".into(),
            password: Secret::new("s3cr3t!!"),
            system_type: "ESME".into(),
            is_active: true,
            tls_enabled: true,
            tls_server_name: Some("smpp.example.net".into()),
            tls_ca_pem: None,
            tls_client_cert_pem: None,
            tls_client_key_pem: Some(Secret::new("KEY")),
            tls_insecure_skip_verify: false,
            bind_mode: "TRX".into(),
            interface_version: "3.4".into(),
            address_range: String::new(),
            max_binds: 2,
            window_size: 10,
            max_messages_per_second: Some(20),
            enquire_link_interval_seconds: 30,
            reconnect_initial_delay_seconds: 1,
            reconnect_max_delay_seconds: 60,
            routing_priority: 100,
            routing_weight: 1,
            routing_prefixes: vec!["1".into()],
            suspended: false,
            message_id_submit_format: IdFormat::default().as_str().into(),
            message_id_receipt_format: IdFormat::default().as_str().into(),
            long_messages: LongMessages::default().as_str().into(),
            default_alphabet: DefaultAlphabet::default().as_str().into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_stable_and_sensitive() {
        let a = ProviderConfig::example();
        assert_eq!(a.fingerprint(), ProviderConfig::example().fingerprint());
        assert_eq!(a.fingerprint().len(), 64);
        let mut b = ProviderConfig::example();
        b.password = Secret::new("other");
        assert_ne!(a.fingerprint(), b.fingerprint());
        // Moving characters between adjacent fields must change the fingerprint.
        let mut c = ProviderConfig::example();
        c.routing_prefixes = vec!["1".into(), "".into()];
        assert_ne!(a.fingerprint(), c.fingerprint());
        let mut d = ProviderConfig::example();
        d.max_messages_per_second = None;
        assert_ne!(a.fingerprint(), d.fingerprint());
        // Each messaging setting counts, and moving a value between them does too.
        let mut e = ProviderConfig::example();
        e.message_id_submit_format = "Hex".into();
        let mut f = ProviderConfig::example();
        f.message_id_receipt_format = "Hex".into();
        let mut g = ProviderConfig::example();
        g.long_messages = "Sar".into();
        let mut h = ProviderConfig::example();
        h.default_alphabet = "Latin1".into();
        let prints: std::collections::HashSet<String> = [&a, &e, &f, &g, &h]
            .iter()
            .map(|c| c.fingerprint())
            .collect();
        assert_eq!(prints.len(), 5);
    }

    #[test]
    fn changed_fields_names_fields_not_values() {
        let a = ProviderConfig::example();
        let mut b = ProviderConfig::example();
        b.password = Secret::new("x");
        b.port = 1;
        assert_eq!(a.changed_fields(&b), vec!["port", "password"]);
        assert!(a.changed_fields(&a).is_empty());
        let mut c = ProviderConfig::example();
        c.message_id_submit_format = "Hex".into();
        c.message_id_receipt_format = "Decimal".into();
        c.long_messages = "Payload".into();
        c.default_alphabet = "Ascii".into();
        assert_eq!(
            a.changed_fields(&c),
            vec![
                "message_id_submit_format",
                "message_id_receipt_format",
                "long_messages",
                "default_alphabet"
            ]
        );
    }

    #[test]
    fn example_has_the_column_defaults() {
        let e = ProviderConfig::example();
        assert_eq!(e.message_id_submit_format, "Auto");
        assert_eq!(e.message_id_receipt_format, "Auto");
        assert_eq!(e.long_messages, "Udh");
        assert_eq!(e.default_alphabet, "Gsm7");
    }

    #[test]
    fn debug_redacts_password_and_key() {
        let text = format!("{:?}", ProviderConfig::example());
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(!text.contains("KEY\""), "{text}");
    }
}
