//! HTTP: /health, /ready, /metrics, GET /api/v1/vendors, and the per-vendor PDU trace switch
//! (POST/DELETE/GET /api/v1/vendors/{name}/trace).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;
use warp::Filter;
use warp::http::StatusCode;

use crate::api::auth::{ApiKeys, AuthError};
use crate::api::messages::{self, MessagesApi};
use crate::fleet::state::Registry;
use crate::metrics::Metrics;
use warp::Reply;

pub fn routes(
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    keys: ApiKeys,
    messages: Option<Arc<MessagesApi>>,
) -> impl Filter<Extract = (impl warp::Reply,), Error = std::convert::Infallible> + Clone {
    let reg = warp::any().map(move || registry.clone());
    let health = warp::path!("health")
        .and(warp::get())
        .map(|| warp::reply::json(&json!({"status": "ok"})));
    let fwd = messages.clone();
    let ready =
        warp::path!("ready")
            .and(warp::get())
            .and(reg.clone())
            .map(move |r: Arc<Registry>| {
                let elsewhere = fwd.as_ref().map_or(0, |m| m.peers.forwardable(&m.pod));
                ready(&r, elsewhere)
            });
    let m = metrics.clone();
    let metrics_route = warp::path!("metrics").and(warp::get()).map(move || {
        warp::reply::with_header(m.render(), "content-type", "text/plain; version=0.0.4")
    });
    let vendors = warp::path!("api" / "v1" / "vendors")
        .and(warp::get())
        .and(reg.clone())
        .map(|r: Arc<Registry>| {
            let vendors: BTreeMap<String, _> = r
                .all()
                .iter()
                .map(|v| (v.id.to_string(), v.view()))
                .collect();
            warp::reply::json(&json!({"success": true, "count": vendors.len(), "vendors": vendors}))
        });
    // A trace shows message content: it needs an API key like submit does.
    let trace = warp::path!("api" / "v1" / "vendors" / String / "trace")
        .and(warp::method())
        .and(reg)
        .and(warp::header::optional::<String>("authorization"))
        .map(
            move |name: String,
                  method: warp::http::Method,
                  r: Arc<Registry>,
                  auth: Option<String>| {
                match keys.check(auth.as_deref()) {
                    Ok(_) => trace(&r, &name, &method).into_response(),
                    Err(AuthError::NoKeys) => messages::error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "no_api_keys",
                        AuthError::NoKeys.to_string(),
                    ),
                    Err(e) => {
                        messages::error(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string())
                    }
                }
            },
        );
    let messages_route = match messages {
        Some(m) => messages::routes(m).boxed(),
        None => warp::path!("api" / "v1" / "messages" / ..)
            .map(|| {
                messages::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "messaging_disabled",
                    "this gateway has no REDIS_URL: it binds vendors but cannot send messages",
                )
            })
            .boxed(),
    };
    health
        .or(ready)
        .or(metrics_route)
        .or(vendors)
        .or(trace)
        .or(messages_route)
        .recover(messages::rejection)
}

/// Ready while this pod can send: a session bound here, or (with messaging on) a vendor
/// bound on another pod it forwards to. With 3 replicas and a vendor that allows 2 binds,
/// the third pod must take its share of the Service's traffic.
fn ready(r: &Registry, forwardable: usize) -> warp::reply::WithStatus<warp::reply::Json> {
    let bound = r.bound_total();
    if bound > 0 || forwardable > 0 {
        return warp::reply::with_status(
            warp::reply::json(
                &json!({"ready": true, "sessions_bound": bound, "vendors_via_other_pods": forwardable}),
            ),
            StatusCode::OK,
        );
    }
    let vendors = r.all();
    let reason = if vendors.is_empty() {
        "no vendor configured (no active row in vendor_mgmt.service_providers, or PostgreSQL not reached yet)".to_string()
    } else {
        let errors: Vec<String> = vendors
            .iter()
            .map(|v| {
                let view = v.view();
                format!(
                    "{}: {}",
                    view.vendor_name,
                    view.last_error.unwrap_or_else(|| "not bound yet".into())
                )
            })
            .collect();
        format!("no vendor session is bound ({})", errors.join(" | "))
    };
    warp::reply::with_status(
        warp::reply::json(&json!({"ready": false, "reason": reason})),
        StatusCode::SERVICE_UNAVAILABLE,
    )
}

fn trace(
    r: &Registry,
    name: &str,
    method: &warp::http::Method,
) -> warp::reply::WithStatus<warp::reply::Json> {
    let Some(v) = r.by_name(name) else {
        let body = json!({"success": false, "error": {"code": "vendor_not_found", "message": format!("no vendor named {name:?} on this pod")}});
        return warp::reply::with_status(warp::reply::json(&body), StatusCode::NOT_FOUND);
    };
    match *method {
        warp::http::Method::POST => v.tracer.set(true),
        warp::http::Method::DELETE => v.tracer.set(false),
        _ => {}
    }
    let body = json!({"success": true, "vendor": name, "trace": v.tracer.enabled(), "lines": v.tracer.lines()});
    warp::reply::with_status(warp::reply::json(&body), StatusCode::OK)
}
