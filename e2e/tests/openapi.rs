//! docs/openapi.yaml against the real gateway: every answer a real smpp-gateway gives here is
//! validated against the schema that the document gives for its operation and status, and every
//! status the document lists is exercised at least once. A field the gateway adds, drops or
//! retypes, or a status it answers that the document does not list, fails this test.
//!
//! Real parts: the smpp-gateway binary (several processes, each in its own situation: messaging
//! with keys, a full queue, Redis unreachable, no keys, no Redis, a forwarding pair), the
//! PostgreSQL and Redis of `make env-up`, and a private node SMSC simulator with a well-behaved
//! listener, one that never answers submit_sm and one that throttles every submit_sm.
//!
//! Run: make env-up; cargo build --bins; cargo test -p smpp-e2e --test openapi

mod gateway_support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use gateway_support::{
    Answer, Gateway, Messaging, Result, TestDb, free_port, get_auth, message, messaging_env,
    post_json, send,
};
use serde_json::{Value, json};
use smpp_e2e::process::repo_root;
use smpp_e2e::smsc::{Behaviour, Smsc, SmscConfig};
use smpp_e2e::wait;

const SYSTEM_ID: &str = "gwopenapi";
const PASSWORD: &str = "0pnApi7x";
const SETTLE: Duration = Duration::from_secs(20);

/// (method, path template, status): one documented response.
type Op = (String, String, u16);

/// docs/openapi.yaml, with a validator per response schema and a record of what was checked.
struct Spec {
    doc: Value,
    validators: Mutex<BTreeMap<String, std::sync::Arc<jsonschema::Validator>>>,
    seen: Mutex<BTreeSet<Op>>,
}

/// A JSON pointer token (RFC 6901).
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

impl Spec {
    fn load() -> Result<Self> {
        let path = repo_root().join("docs/openapi.yaml");
        let text = std::fs::read_to_string(&path)?;
        let doc: Value =
            serde_yaml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        anyhow::ensure!(
            doc["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1")),
            "docs/openapi.yaml is not OpenAPI 3.1"
        );
        Ok(Self {
            doc,
            validators: Mutex::default(),
            seen: Mutex::default(),
        })
    }

    /// Every (method, path, status) the document lists.
    fn documented(&self) -> BTreeSet<Op> {
        let mut out = BTreeSet::new();
        for (path, item) in self.doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                let Some(responses) = op.get("responses").and_then(Value::as_object) else {
                    continue;
                };
                for status in responses.keys() {
                    out.insert((
                        method.to_uppercase(),
                        path.clone(),
                        status.parse().expect("numeric status"),
                    ));
                }
            }
        }
        out
    }

    /// JSON pointer of the response object, following a `$ref` to components/responses.
    fn response_pointer(&self, method: &str, path: &str, status: u16) -> Result<String> {
        let ptr = format!(
            "/paths/{}/{}/responses/{status}",
            escape(path),
            method.to_lowercase()
        );
        let resp = self.doc.pointer(&ptr).ok_or_else(|| {
            anyhow::anyhow!(
                "{method} {path} answered {status}, a status docs/openapi.yaml does not list"
            )
        })?;
        Ok(match resp.get("$ref").and_then(Value::as_str) {
            Some(r) => r.trim_start_matches('#').to_string(),
            None => ptr,
        })
    }

    /// A validator for the schema at `pointer`: the whole document with a root `$ref` to it, so
    /// every `$ref` inside resolves against the document itself.
    fn validator(&self, pointer: &str) -> std::sync::Arc<jsonschema::Validator> {
        let mut cache = self.validators.lock().expect("validators");
        cache
            .entry(pointer.to_string())
            .or_insert_with(|| {
                let mut root = self.doc.clone();
                // A URI fragment: `{name}` in a path template must be percent-encoded.
                let fragment = pointer
                    .replace('%', "%25")
                    .replace('{', "%7B")
                    .replace('}', "%7D");
                root["$ref"] = Value::from(format!("#{fragment}"));
                let v = jsonschema::options()
                    .with_draft(jsonschema::Draft::Draft202012)
                    .should_validate_formats(true)
                    .build(&root)
                    .unwrap_or_else(|e| panic!("docs/openapi.yaml schema at {pointer}: {e}"));
                std::sync::Arc::new(v)
            })
            .clone()
    }

    /// Validation errors of `body` against the response (method, path, status); empty when it
    /// conforms.
    fn errors(&self, method: &str, path: &str, status: u16, body: &Value) -> Result<Vec<String>> {
        let resp = self.response_pointer(method, path, status)?;
        let content = self
            .doc
            .pointer(&format!("{resp}/content"))
            .and_then(Value::as_object)
            .ok_or_else(|| anyhow::anyhow!("{resp}: no content"))?;
        if !content.contains_key("application/json") {
            return Ok(Vec::new());
        }
        let v = self.validator(&format!("{resp}/content/application~1json/schema"));
        Ok(v.iter_errors(body)
            .map(|e| format!("{e} (at {})", e.instance_path()))
            .collect())
    }

    /// Fails unless the real answer is documented and its body conforms; records it as seen.
    fn check(&self, method: &str, path: &str, a: &Answer) -> Value {
        let json_doc = self
            .response_pointer(method, path, a.status)
            .ok()
            .and_then(|p| self.doc.pointer(&format!("{p}/content/application~1json")))
            .is_some();
        if json_doc {
            assert!(
                !a.json.is_null(),
                "{method} {path} {}: the body is not JSON: {}",
                a.status,
                a.body
            );
        }
        let errors = self
            .errors(method, path, a.status, &a.json)
            .unwrap_or_else(|e| panic!("{e}; body: {}", a.body));
        assert!(
            errors.is_empty(),
            "{method} {path} {}: the real answer does not match docs/openapi.yaml:\n  {}\nbody: {}",
            a.status,
            errors.join("\n  "),
            a.body
        );
        self.seen
            .lock()
            .expect("seen")
            .insert((method.to_string(), path.to_string(), a.status));
        a.json.clone()
    }

    /// `check`, then proves the schema is strict for this answer: one field more, or each
    /// required field less, must fail validation.
    fn check_strict(&self, method: &str, path: &str, a: &Answer) -> Value {
        let body = self.check(method, path, a);
        let mut extra = body.clone();
        extra["not_in_the_spec"] = json!(1);
        assert!(
            !self
                .errors(method, path, a.status, &extra)
                .unwrap()
                .is_empty(),
            "{method} {path} {}: the schema allows an unknown field",
            a.status
        );
        for key in body.as_object().expect("object").keys() {
            let mut less = body.clone();
            less.as_object_mut().unwrap().remove(key);
            let required = !self
                .errors(method, path, a.status, &less)
                .unwrap()
                .is_empty();
            // client_ref is optional; everything else the gateway writes is required.
            assert!(
                required || key == "client_ref",
                "{method} {path} {}: the schema does not require {key:?}",
                a.status
            );
        }
        body
    }
}

/// A vendor row on the simulator listener `listener`, routing `prefix`.
async fn vendor(
    db: &TestDb,
    smsc: &Smsc,
    name: &str,
    listener: &str,
    prefix: &str,
) -> Result<String> {
    db.insert_legacy(
        name,
        smsc.port(listener),
        SYSTEM_ID,
        PASSWORD,
        &[("routing_prefixes", &format!("'{{{prefix}}}'"))],
    )
    .await
}

fn bearer(m: &Messaging) -> String {
    format!("Bearer {}", m.token)
}

/// Starts a gateway and waits until it has created the schema.
async fn gateway(db: &TestDb, pod: &str, env: &[(&str, &str)]) -> Result<Gateway> {
    let gw = Gateway::start_with(db, pod, env).await?;
    db.wait_schema().await?;
    Ok(gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_answers_match_docs_openapi_yaml() -> Result {
    // The gateways inherit this process's environment, and `make test` exports the env file's
    // REDIS_URL: the gateway that must run without Redis would see it. The harness reads the
    // env file itself, so nothing here needs these variables.
    // SAFETY: the only test of this binary, before it starts anything that reads the
    // environment.
    unsafe {
        std::env::remove_var("REDIS_URL");
        std::env::remove_var("API_KEYS_FILE");
    }
    let spec = Spec::load()?;
    let m = messaging_env()?;
    let token = m.token.clone();
    let smsc = Smsc::start(
        SmscConfig::new()
            .credential(SYSTEM_ID, PASSWORD)
            .dlr_delay(Duration::from_millis(50))
            .plain("ok", Behaviour::default())
            .plain(
                "silent",
                Behaviour {
                    never_answer_submits: true,
                    ..Default::default()
                },
            )
            .plain(
                "busy",
                Behaviour {
                    throttle_every: Some(1),
                    ..Default::default()
                },
            ),
    )
    .await?;

    // The messaging gateway: three vendors (prefix 1 well behaved, 7 silent, 8 throttling) and
    // a row it cannot use (status "invalid" in /api/v1/vendors).
    let db = TestDb::new().await?;
    let gw = gateway(
        &db,
        "gw-openapi",
        &m.env_with(&[("SUBMIT_TIMEOUT_SECONDS", "1")]),
    )
    .await?;
    vendor(&db, &smsc, "ok", "ok", "1").await?;
    vendor(&db, &smsc, "silent", "silent", "7").await?;
    vendor(&db, &smsc, "busy", "busy", "8").await?;
    db.insert_legacy("broken", 1, SYSTEM_ID, PASSWORD, &[("bind_mode", "'XYZ'")])
        .await?;
    for v in ["ok", "silent", "busy"] {
        gw.wait_bound(v, 1, SETTLE).await?;
    }

    // Probes and vendors.
    let a = get_auth(gw.http, "/health", None).await?;
    spec.check_strict("GET", "/health", &a);
    let a = get_auth(gw.http, "/ready", None).await?;
    assert_eq!(a.status, 200, "{}", a.body);
    spec.check_strict("GET", "/ready", &a);
    let a = get_auth(gw.http, "/metrics", None).await?;
    assert_eq!(a.status, 200);
    assert!(a.body.contains("smpp_sessions_bound"), "{}", a.body);
    spec.check("GET", "/metrics", &a);
    let a = get_auth(gw.http, "/api/v1/vendors", None).await?;
    let vendors = spec.check_strict("GET", "/api/v1/vendors", &a);
    let by_name = |n: &str| {
        vendors["vendors"]
            .as_object()
            .unwrap()
            .values()
            .find(|v| v["vendor_name"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("{n} not in {vendors}"))
    };
    assert_eq!(by_name("broken")["status"], "invalid");
    assert_eq!(by_name("ok")["status"], "connected");
    assert!(!by_name("ok")["sessions"].as_array().unwrap().is_empty());

    // The trace switch.
    let trace = "/api/v1/vendors/{name}/trace";
    let auth = bearer(&m);
    let with_key = [("Authorization", auth.as_str())];
    for (method, on) in [("POST", true), ("GET", true), ("DELETE", false)] {
        let a = send(gw.http, method, "/api/v1/vendors/ok/trace", &with_key, b"").await?;
        assert_eq!(
            (a.status, a.json["trace"].as_bool()),
            (200, Some(on)),
            "{}",
            a.body
        );
        spec.check_strict(method, trace, &a);
        let a = send(
            gw.http,
            method,
            "/api/v1/vendors/nope/trace",
            &with_key,
            b"",
        )
        .await?;
        assert_eq!(a.status, 404, "{}", a.body);
        assert_eq!(a.code(), "vendor_not_found");
        spec.check(method, trace, &a);
        for h in [&[][..], &[("Authorization", "Bearer wrong")][..]] {
            let a = send(gw.http, method, "/api/v1/vendors/ok/trace", h, b"").await?;
            assert_eq!((a.status, a.code()), (401, "unauthorized"), "{}", a.body);
            spec.check(method, trace, &a);
        }
    }

    // On again, so that the first messages show in it.
    let a = send(gw.http, "POST", "/api/v1/vendors/ok/trace", &with_key, b"").await?;
    spec.check("POST", trace, &a);

    // Submit: 201, the same answer again under its Idempotency-Key, then 409 for another body.
    let msgs = "/api/v1/messages";
    let mut first = message("+15551234567", "openapi check", None);
    first["client_ref"] = json!("order-42");
    let a = gw.submit_idem(&token, "idem-openapi-1", &first).await?;
    assert_eq!(a.status, 201, "{}", a.body);
    let accepted = spec.check_strict("POST", msgs, &a);
    let again = gw.submit_idem(&token, "idem-openapi-1", &first).await?;
    spec.check("POST", msgs, &again);
    assert_eq!(
        again.json, accepted,
        "an Idempotency-Key retry answers the first result"
    );
    let other = message("+15551234567", "another text", None);
    let a = gw.submit_idem(&token, "idem-openapi-1", &other).await?;
    assert_eq!(
        (a.status, a.code()),
        (409, "idempotency_key_reused"),
        "{}",
        a.body
    );
    spec.check("POST", msgs, &a);

    // A two-part message, delivered, with its history.
    let long = "x".repeat(200);
    let a = gw
        .submit(&token, &message("+15551234567", &long, None))
        .await?;
    assert_eq!(
        (a.status, a.json["parts"].as_u64()),
        (201, Some(2)),
        "{}",
        a.body
    );
    spec.check("POST", msgs, &a);
    let id = a.json["id"].as_str().unwrap().to_string();
    gw.wait_status(&token, &id, "delivered", SETTLE).await?;
    let got = "/api/v1/messages/{id}";
    let a = gw.message(&token, &id).await?;
    let msg = spec.check_strict("GET", got, &a);
    assert!(msg["done_at"].is_string(), "{msg}");
    let a = gw.message(&token, accepted["id"].as_str().unwrap()).await?;
    let msg = spec.check_strict("GET", got, &a);
    assert_eq!(msg["client_ref"], "order-42");

    // 400s, each naming what is wrong.
    for (body, code) in [
        (message("12ab", "hi", None), "invalid_request"),
        (message("+15551234567", "", None), "invalid_request"),
        (
            message("+15551234567", "hi", Some("nobody")),
            "unknown_vendor",
        ),
        (
            json!({"to": "+15551234567", "from": "ACME", "text": "hi", "colour": "red"}),
            "invalid_json",
        ),
    ] {
        let a = gw.submit(&token, &body).await?;
        assert_eq!((a.status, a.code()), (400, code), "{}", a.body);
        spec.check("POST", msgs, &a);
    }
    let a = send(
        gw.http,
        "POST",
        msgs,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        b"{not json",
    )
    .await?;
    assert_eq!((a.status, a.code()), (400, "invalid_json"), "{}", a.body);
    spec.check("POST", msgs, &a);

    // 401: no key, a wrong key.
    let body = message("+15551234567", "hi", None);
    for t in [None, Some("wrong")] {
        let a = post_json(gw.http, msgs, t, &[], &body).await?;
        assert_eq!((a.status, a.code()), (401, "unauthorized"), "{}", a.body);
        spec.check("POST", msgs, &a);
    }

    // 413: a body over 4 MiB.
    let huge = vec![b' '; 4 * 1024 * 1024 + 1];
    let a = send(gw.http, "POST", msgs, &with_key, &huge).await?;
    assert_eq!((a.status, a.code()), (413, "body_too_large"), "{}", a.body);
    spec.check("POST", msgs, &a);

    // 502: the vendor throttles every try; 503: nothing routes +44; 504: no submit_sm_resp.
    let a = gw
        .submit(&token, &message("+85550001", "hi", Some("busy")))
        .await?;
    assert_eq!((a.status, a.code()), (502, "vendor_rejected"), "{}", a.body);
    assert!(a.message().contains("ESME_RTHROTTLED"), "{}", a.body);
    spec.check("POST", msgs, &a);
    let a = gw
        .submit(&token, &message("+447700900123", "hi", None))
        .await?;
    assert_eq!((a.status, a.code()), (503, "no_route"), "{}", a.body);
    spec.check("POST", msgs, &a);
    let a = gw
        .submit(&token, &message("+75550001", "hi", Some("silent")))
        .await?;
    assert_eq!((a.status, a.code()), (504, "vendor_timeout"), "{}", a.body);
    spec.check("POST", msgs, &a);
    let failed = a.json["error"]["id"]
        .as_str()
        .expect("error.id")
        .to_string();
    let a = gw.message(&token, &failed).await?;
    let msg = spec.check("GET", got, &a);
    assert_eq!(msg["status"], "failed", "{msg}");

    // GET: unknown id, no key.
    let a = gw
        .message(&token, "0123456789abcdef0123456789abcdef")
        .await?;
    assert_eq!(
        (a.status, a.code()),
        (404, "message_not_found"),
        "{}",
        a.body
    );
    spec.check("GET", got, &a);
    let a = get_auth(gw.http, &format!("/api/v1/messages/{id}"), None).await?;
    assert_eq!(a.status, 401, "{}", a.body);
    spec.check("GET", got, &a);

    // The trace has lines now (it was on while the messages went out).
    let a = send(
        gw.http,
        "DELETE",
        "/api/v1/vendors/ok/trace",
        &with_key,
        b"",
    )
    .await?;
    let t = spec.check("DELETE", trace, &a);
    assert!(!t["lines"].as_array().unwrap().is_empty(), "{t}");

    // Batch: one result per message, each a 201 body or an error object.
    let batch = "/api/v1/messages/batch";
    let a = gw
        .batch(
            &token,
            &[
                message("+15551234567", "batch one", None),
                message("12ab", "bad number", None),
                message("+15551234567", "hi", Some("nobody")),
                json!({"to": 15551234567u64}),
                message("+447700900123", "no route", None),
            ],
        )
        .await?;
    assert_eq!(a.status, 200, "{}", a.body);
    let r = spec.check_strict("POST", batch, &a);
    let codes: Vec<&str> = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["error"]["code"].as_str().unwrap_or("ok"))
        .collect();
    assert_eq!(
        codes,
        [
            "ok",
            "invalid_request",
            "unknown_vendor",
            "invalid_request",
            "no_route"
        ]
    );
    let too_many: Vec<Value> = (0..1001).map(|_| json!({})).collect();
    let a = gw.batch(&token, &too_many).await?;
    assert_eq!((a.status, a.code()), (413, "batch_too_large"), "{}", a.body);
    spec.check("POST", batch, &a);
    let a = post_json(gw.http, batch, Some(&token), &[], &json!({"msgs": []})).await?;
    assert_eq!((a.status, a.code()), (400, "invalid_json"), "{}", a.body);
    spec.check("POST", batch, &a);
    let a = post_json(gw.http, batch, None, &[], &json!({"messages": []})).await?;
    assert_eq!(a.status, 401, "{}", a.body);
    spec.check("POST", batch, &a);

    // Other situations, each a gateway of its own: a full queue; Redis unreachable; no API
    // keys; no Redis at all; a pod that forwards to the pod holding the bind.
    let db_q = TestDb::new().await?;
    let gw_q = gateway(
        &db_q,
        "gw-openapi-q",
        &m.env_with(&[("MAX_INFLIGHT_SUBMITS", "0")]),
    )
    .await?;
    vendor(&db_q, &smsc, "ok", "ok", "1").await?;
    gw_q.wait_bound("ok", 1, SETTLE).await?;
    let a = gw_q
        .submit(&token, &message("+15551234567", "hi", None))
        .await?;
    assert_eq!((a.status, a.code()), (429, "queue_full"), "{}", a.body);
    spec.check("POST", msgs, &a);

    let db_e = TestDb::new().await?;
    let dead_redis = format!("redis://127.0.0.1:{}/0", free_port());
    let keys = m.keys_file.to_str().unwrap();
    let gw_r = gateway(
        &db_e,
        "gw-openapi-r",
        &[("REDIS_URL", &dead_redis), ("API_KEYS_FILE", keys)],
    )
    .await?;
    let a = gw_r.message(&token, &id).await?;
    assert_eq!(
        (a.status, a.code()),
        (503, "redis_unavailable"),
        "{}",
        a.body
    );
    spec.check("GET", got, &a);
    let a = gw_r.submit_idem(&token, "idem-openapi-r", &body).await?;
    assert_eq!(
        (a.status, a.code()),
        (503, "redis_unavailable"),
        "{}",
        a.body
    );
    spec.check("POST", msgs, &a);
    let a = get_auth(gw_r.http, "/ready", None).await?;
    assert_eq!(a.status, 503, "{}", a.body);
    spec.check_strict("GET", "/ready", &a);

    let gw_k = gateway(&db_e, "gw-openapi-k", &[("REDIS_URL", &m.redis_url)]).await?;
    let a = gw_k.submit(&token, &body).await?;
    assert_eq!((a.status, a.code()), (503, "no_api_keys"), "{}", a.body);
    spec.check("POST", msgs, &a);
    let a = gw_k.batch(&token, std::slice::from_ref(&body)).await?;
    assert_eq!((a.status, a.code()), (503, "no_api_keys"), "{}", a.body);
    spec.check("POST", batch, &a);
    for method in ["GET", "POST", "DELETE"] {
        let a = send(
            gw_k.http,
            method,
            "/api/v1/vendors/ok/trace",
            &with_key,
            b"",
        )
        .await?;
        assert_eq!((a.status, a.code()), (503, "no_api_keys"), "{}", a.body);
        spec.check(method, trace, &a);
    }

    let gw_n = gateway(&db_e, "gw-openapi-n", &[]).await?;
    let a = gw_n.submit(&token, &body).await?;
    assert_eq!(
        (a.status, a.code()),
        (503, "messaging_disabled"),
        "{}",
        a.body
    );
    spec.check("POST", msgs, &a);
    let a = gw_n.message(&token, &id).await?;
    assert_eq!(
        (a.status, a.code()),
        (503, "messaging_disabled"),
        "{}",
        a.body
    );
    spec.check("GET", got, &a);
    let a = get_auth(gw_n.http, "/api/v1/vendors", None).await?;
    assert_eq!(spec.check("GET", "/api/v1/vendors", &a)["count"], 0);

    // Forwarding: the pod without the bind answers with the holder's 201, and 502 when the
    // holder it knows of cannot be reached.
    let db_f = TestDb::new().await?;
    let fwd_env = m.env_with(&[("POD_IP", "127.0.0.1")]);
    let mut holder = gateway(&db_f, "gw-openapi-holder", &fwd_env).await?;
    vendor(&db_f, &smsc, "ok", "ok", "1").await?;
    holder.wait_bound("ok", 1, SETTLE).await?;
    let entry = gateway(&db_f, "gw-openapi-entry", &fwd_env).await?;
    let a = wait::until(
        "a submit forwarded by the pod without a bind",
        SETTLE,
        || async {
            let a = entry
                .submit(&token, &message("+15551234567", "fwd", None))
                .await?;
            // Until its 1 s snapshot shows the holder, the entry pod knows no route.
            spec.check("POST", msgs, &a);
            Ok((a.status == 201).then_some(a))
        },
    )
    .await?;
    spec.check_strict("POST", msgs, &a);
    assert_eq!(entry.bound("ok").await?, 0, "the entry pod holds no bind");
    holder.guard.kill();
    let a = entry
        .submit(&token, &message("+15551234567", "fwd", None))
        .await?;
    assert_eq!((a.status, a.code()), (502, "forward_failed"), "{}", a.body);
    spec.check("POST", msgs, &a);

    // Every documented status was seen.
    let seen = spec.seen.lock().unwrap().clone();
    let missing: Vec<_> = spec.documented().difference(&seen).cloned().collect();
    assert!(
        missing.is_empty(),
        "documented in docs/openapi.yaml but never exercised: {missing:?}"
    );
    for g in [&gw, &gw_q, &gw_r, &gw_k, &gw_n, &entry] {
        g.assert_no_secret_in_log(&[&token, PASSWORD]);
    }
    Ok(())
}
