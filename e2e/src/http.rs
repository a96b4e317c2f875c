//! The harness's one HTTP client (reqwest, which the gateway already uses): a request returns
//! its status and body, and errors name the method and URL. No keep-alive: each request has
//! a client of its own, so no pooled connection outlives the test runtime that opened it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), smpp_e2e::http::HttpError> {
//! use smpp_e2e::http;
//! let stats = http::get_json(&http::local(8080, "/stats"), &[]).await?;
//! let a = http::post_json(&http::local(8080, "/api/v1/messages"), &[], &stats).await?;
//! assert_eq!(a.status, 201, "{}", a.body);
//! # Ok(()) }
//! ```

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::Value;

/// Bounds a hang; the slowest answers the tests wait for (a gateway's 504 after its submit
/// timeout, a 4 MiB body) come well within it.
pub const TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{method} {url}: {reason} (is the server listening there?)")]
    Request {
        method: String,
        url: String,
        reason: String,
    },
    #[error("{method} {url}: HTTP {status}, expected {expected}: {body}")]
    Status {
        method: String,
        url: String,
        status: u16,
        expected: u16,
        body: String,
    },
    #[error("{method} {url}: the answer is not JSON ({reason}): {body}")]
    NotJson {
        method: String,
        url: String,
        reason: String,
        body: String,
    },
}

/// An HTTP answer: status, body, and the body as JSON (`Value::Null` when it is not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub json: Value,
}

impl Answer {
    /// `error.code` of an error answer of our API ("" when absent).
    pub fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }

    /// `error.message` of an error answer of our API ("" when absent).
    pub fn message(&self) -> &str {
        self.json["error"]["message"].as_str().unwrap_or("")
    }
}

/// `http://127.0.0.1:<port><path>`.
pub fn local(port: u16, path: &str) -> String {
    format!("http://127.0.0.1:{port}{path}")
}

/// `method` `url` with `headers` and `body`; any status is an answer, only a failed exchange
/// (refused, reset before the head, timeout) is an error.
pub async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Answer, HttpError> {
    let fail = |reason: String| HttpError::Request {
        method: method.into(),
        url: url.into(),
        reason,
    };
    let m = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| fail(e.to_string()))?;
    // An explicit Content-Length, also 0: hyper leaves it out of an empty body, and a server
    // may then answer 411 instead of judging the (empty) body.
    let mut req = client()
        .map_err(|e| fail(format!("{e:#}")))?
        .request(m, url)
        .body(body.to_vec());
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        req = req.header(reqwest::header::CONTENT_LENGTH, body.len());
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.map_err(|e| fail(chain(&e)))?;
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.map_err(|e| fail(chain(&e)))?;
    let body = String::from_utf8_lossy(&bytes).into_owned();
    let json = serde_json::from_str(&body).unwrap_or(Value::Null);
    Ok(Answer { status, body, json })
}

/// GET `url` with `headers`.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> Result<Answer, HttpError> {
    request("GET", url, headers, b"").await
}

/// GET `url`, expecting 200 and a JSON body.
pub async fn get_json(url: &str, headers: &[(&str, &str)]) -> Result<Value, HttpError> {
    let a = get(url, headers).await?;
    expect_json("GET", url, 200, a)
}

/// POST `body` as JSON (Content-Type application/json) with `headers`; any status.
pub async fn post_json(
    url: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> Result<Answer, HttpError> {
    let mut h = vec![("Content-Type", "application/json")];
    h.extend_from_slice(headers);
    let bytes = serde_json::to_vec(body).expect("a serde_json::Value serializes");
    request("POST", url, &h, &bytes).await
}

/// The JSON of `a` when its status is `expected`; an error naming the request otherwise.
pub fn expect_json(method: &str, url: &str, expected: u16, a: Answer) -> Result<Value, HttpError> {
    if a.status != expected {
        return Err(HttpError::Status {
            method: method.into(),
            url: url.into(),
            status: a.status,
            expected,
            body: a.body,
        });
    }
    serde_json::from_str(&a.body).map_err(|e| HttpError::NotJson {
        method: method.into(),
        url: url.into(),
        reason: e.to_string(),
        body: a.body,
    })
}

fn client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls_config())
        .pool_max_idle_per_host(0)
        .timeout(TIMEOUT)
        .build()
}

/// reqwest is built without a TLS provider of its own (the gateway picks one); this is ring,
/// with no roots: the harness speaks plain HTTP to 127.0.0.1.
fn tls_config() -> rustls::ClientConfig {
    static CONFIG: OnceLock<rustls::ClientConfig> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
        })
        .clone()
}

/// The error with its causes ("error sending request: connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            body: body.into(),
            json: serde_json::from_str(body).unwrap_or(Value::Null),
        }
    }

    #[test]
    fn expect_json_checks_the_status_then_the_body() {
        let url = "http://127.0.0.1:1/stats";
        let v = expect_json("GET", url, 200, answer(200, r#"{"a":1}"#)).unwrap();
        assert_eq!(v["a"], 1);
        let e = expect_json("GET", url, 200, answer(503, "down")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "GET http://127.0.0.1:1/stats: HTTP 503, expected 200: down"
        );
        let e = expect_json("GET", url, 200, answer(200, "<html>")).unwrap_err();
        assert!(matches!(e, HttpError::NotJson { .. }), "{e}");
    }

    #[tokio::test]
    async fn a_refused_connection_names_the_request() {
        let port = crate::sink::free_port().unwrap();
        let url = local(port, "/health");
        let e = get(&url, &[]).await.unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with(&format!("GET {url}: ")), "{text}");
        assert!(text.contains("refused"), "the cause is kept: {text}");
    }
}
