//! POST /api/v1/messages, POST /api/v1/messages/batch, GET /api/v1/messages/{id}.
//!
//! Any pod serves any request: a pod with no bound session for the chosen vendor forwards the
//! submit, one hop, to a pod that has one (`api::forward`). The Idempotency-Key is kept in
//! Redis, so a retry that lands on another pod returns the first answer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::api::auth::{ApiKeys, AuthError};
use crate::api::forward::{CUSTOMER_PATH, CustomerForward, FORWARDED_HEADER, Forwarder};
use crate::fleet::peers::Peers;
use crate::messaging::store::IdemBegin;
use crate::messaging::submit::{self, Extra, MessageRequest, Messenger, SubmitError};
use smpp_db::accounts::RouteEntry;

pub const MAX_BODY: u64 = 4 * 1024 * 1024;
/// A body over MAX_BODY but within this is read and thrown away before the 413: clients that
/// write the whole body before reading the answer (hyper, Python requests) then see the 413
/// instead of a broken pipe. Beyond it the connection is cut at once.
pub const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;

/// The body was over [`MAX_BODY`].
#[derive(Debug)]
struct BodyTooLarge;
impl warp::reject::Reject for BodyTooLarge {}

/// The request body, at most [`MAX_BODY`] bytes kept (see [`DRAIN_LIMIT`]).
fn limited_body() -> impl Filter<Extract = (Bytes,), Error = warp::Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .and_then(|declared: Option<u64>, mut stream| async move {
            if declared.is_some_and(|n| n > DRAIN_LIMIT) {
                return Err(warp::reject::custom(BodyTooLarge));
            }
            let mut kept = bytes::BytesMut::new();
            let mut total = 0u64;
            while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
                let mut chunk: Box<dyn bytes::Buf + Send> = match chunk {
                    Ok(c) => Box::new(c),
                    // The client went away mid-body: nothing to answer.
                    Err(_) => return Err(warp::reject::custom(BodyTooLarge)),
                };
                total += chunk.remaining() as u64;
                if total > DRAIN_LIMIT {
                    return Err(warp::reject::custom(BodyTooLarge));
                }
                if total <= MAX_BODY {
                    while chunk.has_remaining() {
                        let n = chunk.chunk().len();
                        kept.extend_from_slice(chunk.chunk());
                        chunk.advance(n);
                    }
                }
            }
            if total > MAX_BODY {
                Err(warp::reject::custom(BodyTooLarge))
            } else {
                Ok(kept.freeze())
            }
        })
}
pub const MAX_BATCH: usize = 1000;

/// What the message endpoints share.
pub struct MessagesApi {
    pub keys: ApiKeys,
    pub messenger: Arc<Messenger>,
    pub peers: Arc<Peers>,
    pub forwarder: Forwarder,
    pub pod: String,
}

/// `{"success":false,"error":{"code","message"}}` with its HTTP status.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = json!({"success": false, "error": {"code": code, "message": message.into()}});
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

fn auth_error(e: AuthError) -> Response {
    match e {
        AuthError::NoKeys => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_api_keys",
            e.to_string(),
        ),
        _ => error(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string()),
    }
}

fn submit_error_body(e: &SubmitError) -> Value {
    let mut err = json!({"code": e.code(), "message": e.to_string()});
    if let Some(id) = e.message_id() {
        err["id"] = json!(id);
    }
    json!({"success": false, "error": err})
}

/// (HTTP status, body) of one submit.
fn outcome(r: &Result<submit::Accepted, SubmitError>) -> (u16, Value) {
    match r {
        Ok(a) => (201, serde_json::to_value(a).expect("accepted")),
        Err(e) => (e.http_status(), submit_error_body(e)),
    }
}

fn reply(code: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}

/// Deserializes, naming the field that is wrong (`to: invalid type: integer ...`).
fn named<'de, D, T>(de: D) -> Result<T, String>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            e.inner().to_string()
        } else {
            format!("{path}: {}", e.inner())
        }
    })
}

/// Parses a JSON request body into a 400 that names the field or position that is wrong.
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Box<Response>> {
    named(&mut serde_json::Deserializer::from_slice(body)).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("request body: {e}"),
        ))
    })
}

impl MessagesApi {
    /// Validates, routes and sends one message here or on the pod holding the vendor.
    pub async fn submit(
        &self,
        req: MessageRequest,
        auth: &str,
        forwarded: bool,
    ) -> Result<submit::Accepted, SubmitError> {
        submit::validate(&req)?;
        self.dispatch(&req, &Extra::default(), &[], auth, forwarded)
            .await
    }

    /// Routes and sends a validated message here or on the pod holding the vendor. `route` is
    /// a customer account's own route (empty: the default routing; ignored when the request
    /// pins a vendor). The hop authenticates with `auth`.
    pub async fn dispatch(
        &self,
        req: &MessageRequest,
        extra: &Extra,
        route: &[RouteEntry],
        auth: &str,
        forwarded: bool,
    ) -> Result<submit::Accepted, SubmitError> {
        let me = &self.pod;
        let vendors: Vec<_> = self
            .messenger
            .sessions
            .configs()
            .into_iter()
            .map(|(c, here)| {
                let bound = here > 0 || (!forwarded && !self.peers.elsewhere(c.id, me).is_empty());
                (c, here, bound)
            })
            .collect();
        let table: Vec<_> = vendors.iter().map(|(c, _, b)| (c.clone(), *b)).collect();
        let route = if route.is_empty() || req.vendor.is_some() {
            submit::route(req, &table)?
        } else {
            submit::account_route(req, route, &table)?
        };
        let local = |id| vendors.iter().any(|(c, here, _)| c.id == id && *here > 0);
        let first = &route[0];
        if local(first.id) {
            let here: Vec<_> = route.iter().filter(|c| local(c.id)).cloned().collect();
            return self.messenger.submit_local_with(req, extra, &here).await;
        }
        // No bind here: one hop to a pod that has one.
        let peers = self.peers.elsewhere(first.id, me);
        let mut pinned = req.clone();
        pinned.vendor = Some(first.name.clone());
        if *extra == Extra::default() {
            self.forwarder.submit(&peers, &pinned, auth).await
        } else {
            self.forwarder
                .submit_customer(&peers, &pinned, extra, auth)
                .await
        }
    }

    async fn submit_idempotent(
        &self,
        key_name: &str,
        idem: Option<String>,
        body: &[u8],
        req: MessageRequest,
        auth: &str,
        forwarded: bool,
    ) -> (u16, Value) {
        let Some(idem) = idem else {
            return outcome(&self.submit(req, auth, forwarded).await);
        };
        let hash = hex::encode(Sha256::digest(body));
        let store = &self.messenger.store;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match store.idem_begin(key_name, &idem, &hash).await {
                Err(e) => {
                    self.messenger
                        .metrics
                        .redis_errors
                        .with_label_values(&["idempotency"])
                        .inc();
                    return outcome(&Err(SubmitError::StoreUnavailable(e.to_string())));
                }
                Ok(IdemBegin::Done(code, body)) => return (code, body),
                Ok(IdemBegin::Mismatch) => {
                    return (
                        409,
                        json!({"success": false, "error": {"code": "idempotency_key_reused",
                        "message": "this Idempotency-Key was used with a different request body; use a new key for a new message"}}),
                    );
                }
                Ok(IdemBegin::InFlight) => {
                    if tokio::time::Instant::now() >= deadline {
                        return (
                            409,
                            json!({"success": false, "error": {"code": "idempotency_in_flight",
                            "message": "the first request with this Idempotency-Key is still in flight; retry later"}}),
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(IdemBegin::Fresh) => break,
            }
        }
        let r = self.submit(req, auth, forwarded).await;
        let (code, body) = outcome(&r);
        // Nothing was sent (bad request, no route, queue full): give the key back.
        let sent = r.is_ok() || r.as_ref().err().and_then(|e| e.message_id()).is_some();
        let saved = if sent {
            store.idem_finish(key_name, &idem, &hash, code, &body).await
        } else {
            store.idem_abort(key_name, &idem).await
        };
        if let Err(e) = saved {
            self.messenger
                .metrics
                .redis_errors
                .with_label_values(&["idempotency"])
                .inc();
            tracing::warn!(error = %e, "cannot record the Idempotency-Key's answer");
        }
        (code, body)
    }
}

pub fn routes(
    api: Arc<MessagesApi>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let with = {
        let api = api.clone();
        warp::any().map(move || api.clone())
    };
    let single = warp::path!("api" / "v1" / "messages")
        .and(warp::post())
        .and(with.clone())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::header::optional::<String>("idempotency-key"))
        .and(warp::header::optional::<String>(FORWARDED_HEADER))
        .and(limited_body())
        .then(
            |api: Arc<MessagesApi>,
             auth: Option<String>,
             idem: Option<String>,
             fwd: Option<String>,
             body: Bytes| async move {
                let key = match api.keys.check(auth.as_deref()) {
                    Ok(k) => k,
                    Err(e) => return auth_error(e),
                };
                let req: MessageRequest = match parse_body(&body) {
                    Ok(r) => r,
                    Err(resp) => return *resp,
                };
                let forwarded = fwd.is_some();
                let idem = if forwarded { None } else { idem };
                let (code, out) = api
                    .submit_idempotent(
                        &key,
                        idem,
                        &body,
                        req,
                        auth.as_deref().unwrap_or(""),
                        forwarded,
                    )
                    .await;
                reply(code, &out)
            },
        );
    let batch = warp::path!("api" / "v1" / "messages" / "batch")
        .and(warp::post())
        .and(with.clone())
        .and(warp::header::optional::<String>("authorization"))
        .and(limited_body())
        .then(
            |api: Arc<MessagesApi>, auth: Option<String>, body: Bytes| async move {
                if let Err(e) = api.keys.check(auth.as_deref()) {
                    return auth_error(e);
                }
                #[derive(serde::Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Batch {
                    messages: Vec<Value>,
                }
                let b: Batch = match parse_body(&body) {
                    Ok(b) => b,
                    Err(resp) => return *resp,
                };
                if b.messages.len() > MAX_BATCH {
                    return error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "batch_too_large",
                        format!(
                            "messages: {} entries, at most {MAX_BATCH} per batch",
                            b.messages.len()
                        ),
                    );
                }
                let auth = auth.unwrap_or_default();
                let results: Vec<Value> = futures::stream::iter(b.messages.into_iter().enumerate())
                    .map(|(i, m)| {
                        let api = api.clone();
                        let auth = auth.clone();
                        async move {
                            match named::<_, MessageRequest>(m) {
                                Err(e) => {
                                    json!({"success": false, "error": {"code": "invalid_request",
                                "message": format!("messages[{i}]: {e}")}})
                                }
                                Ok(req) => outcome(&api.submit(req, &auth, false).await).1,
                            }
                        }
                    })
                    .buffered(64)
                    .collect()
                    .await;
                warp::reply::json(&json!({"results": results})).into_response()
            },
        );
    let get = warp::path!("api" / "v1" / "messages" / String)
        .and(warp::get())
        .and(with.clone())
        .and(warp::header::optional::<String>("authorization"))
        .then(
            |id: String, api: Arc<MessagesApi>, auth: Option<String>| async move {
                if let Err(e) = api.keys.check(auth.as_deref()) {
                    return auth_error(e);
                }
                match api.messenger.store.get(&id).await {
                    Ok(Some(v)) => warp::reply::json(&v).into_response(),
                    Ok(None) => error(
                        StatusCode::NOT_FOUND,
                        "message_not_found",
                        format!("no message {id:?} (unknown, or older than the DLR TTL)"),
                    ),
                    Err(e) => {
                        api.messenger
                            .metrics
                            .redis_errors
                            .with_label_values(&["get"])
                            .inc();
                        error(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "redis_unavailable",
                            e.to_string(),
                        )
                    }
                }
            },
        );
    // A customer's SMPP submit forwarded by the pod it is bound to (one hop, vendor pinned).
    // Its answer carries the SMPP command_status, which the entry pod passes on.
    let customer = warp::path("api")
        .and(warp::path("v1"))
        .and(warp::path("internal"))
        .and(warp::path("customer-messages"))
        .and(warp::path::end())
        .and(warp::post())
        .and(with.clone())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::header::optional::<String>(FORWARDED_HEADER))
        .and(limited_body())
        .then(
            |api: Arc<MessagesApi>, auth: Option<String>, fwd: Option<String>, body: Bytes| async move {
                if let Err(e) = api.keys.check(auth.as_deref()) {
                    return auth_error(e);
                }
                if fwd.is_none() {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "not_forwarded",
                        format!("{CUSTOMER_PATH} takes only submits forwarded by another pod"),
                    );
                }
                let f: CustomerForward = match parse_body(&body) {
                    Ok(f) => f,
                    Err(resp) => return *resp,
                };
                let r = api
                    .dispatch(&f.request, &f.extra, &[], auth.as_deref().unwrap_or(""), true)
                    .await;
                let (code, mut out) = outcome(&r);
                if let Err(e) = &r {
                    out["error"]["command_status"] =
                        json!(u32::from(crate::api::smpp::status::submit_status(e)));
                }
                reply(code, &out)
            },
        );
    single
        .or(batch)
        .unify()
        .or(get)
        .unify()
        .or(customer)
        .unify()
}

/// Turns warp's own rejections (too large, wrong method, bad content length) into the API's
/// error shape.
pub async fn rejection(r: warp::Rejection) -> Result<Response, std::convert::Infallible> {
    if r.is_not_found() {
        return Ok(error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such endpoint",
        ));
    }
    if r.find::<warp::reject::PayloadTooLarge>().is_some() || r.find::<BodyTooLarge>().is_some() {
        return Ok(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than {MAX_BODY} bytes"),
        ));
    }
    if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        return Ok(error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this endpoint",
        ));
    }
    Ok(error(
        StatusCode::BAD_REQUEST,
        "bad_request",
        format!("{r:?}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_type_names_the_field() {
        let body = br#"{"to": 15551234567, "from": "ACME", "text": "hi"}"#;
        let e = named::<_, MessageRequest>(&mut serde_json::Deserializer::from_slice(body))
            .unwrap_err();
        assert!(e.starts_with("to: invalid type: integer"), "{e}");
        let v = serde_json::json!({"to": "1", "from": "A", "text": 5});
        let e = named::<_, MessageRequest>(v).unwrap_err();
        assert!(e.starts_with("text: invalid type"), "{e}");
        let e = named::<_, MessageRequest>(serde_json::json!({"to": "1"})).unwrap_err();
        assert!(e.contains("missing field `from`"), "{e}");
    }
}
