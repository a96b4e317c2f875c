//! API keys: `name:token` per line in --api-keys-file, reloaded when the file changes,
//! compared in constant time. No keys means every authenticated endpoint refuses: it fails
//! closed. Tokens never reach a log line; only the key's name does.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use subtle::ConstantTimeEq;

#[derive(Clone)]
struct Key {
    name: String,
    token: Vec<u8>,
}

/// The keys of this process.
#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: Arc<RwLock<Vec<Key>>>,
}

/// Why a request is not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no API keys are configured on this gateway (--api-keys-file); submit is refused")]
    NoKeys,
    #[error("missing Authorization: Bearer <key> header")]
    Missing,
    #[error("the API key is not valid")]
    Invalid,
}

/// Parses the keys file: `name:token` per line; blank lines and `#` comments are skipped.
/// Returns the keys and one message per bad line (line number only, never its content).
pub fn parse(text: &str) -> (Vec<(String, String)>, Vec<String>) {
    let mut keys = Vec::new();
    let mut bad = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once(':') {
            Some((name, token)) if !name.trim().is_empty() && !token.trim().is_empty() => {
                keys.push((name.trim().to_string(), token.trim().to_string()))
            }
            _ => bad.push(format!("line {}: expected name:token", n + 1)),
        }
    }
    (keys, bad)
}

impl ApiKeys {
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        let k = Self::default();
        k.set(pairs);
        k
    }

    fn set(&self, pairs: Vec<(String, String)>) {
        *self.keys.write().expect("keys") = pairs
            .into_iter()
            .map(|(name, token)| Key {
                name,
                token: token.into_bytes(),
            })
            .collect();
    }

    pub fn len(&self) -> usize {
        self.keys.read().expect("keys").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An `Authorization` header value with one of the keys, for a hop to another pod that
    /// serves a customer's SMPP submit (every pod loads the same keys). None without keys.
    pub fn hop_header(&self) -> Option<String> {
        let keys = self.keys.read().expect("keys");
        let k = keys.first()?;
        Some(format!("Bearer {}", String::from_utf8_lossy(&k.token)))
    }

    /// The key's name for an `Authorization` header value. Every key is compared, each in
    /// constant time, so the time taken says nothing about which key nearly matched.
    pub fn check(&self, header: Option<&str>) -> Result<String, AuthError> {
        let keys = self.keys.read().expect("keys");
        if keys.is_empty() {
            return Err(AuthError::NoKeys);
        }
        let token = header
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(AuthError::Missing)?;
        let mut found = None;
        for k in keys.iter() {
            if bool::from(k.token.ct_eq(token.as_bytes())) {
                found = Some(k.name.clone());
            }
        }
        found.ok_or(AuthError::Invalid)
    }

    /// Loads the file now and again whenever its modification time changes.
    pub fn watch(path: PathBuf) -> Self {
        let keys = Self::default();
        let k = keys.clone();
        let mut seen = load(&k, &path, None);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tick.tick().await;
                let now = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
                if now != seen {
                    seen = load(&k, &path, now);
                }
            }
        });
        keys
    }
}

fn load(keys: &ApiKeys, path: &PathBuf, mtime: Option<SystemTime>) -> Option<SystemTime> {
    let mtime = mtime.or_else(|| std::fs::metadata(path).and_then(|m| m.modified()).ok());
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let (pairs, bad) = parse(&text);
            for b in &bad {
                tracing::warn!(file = %path.display(), "API keys file: {b}");
            }
            let names: Vec<&str> = pairs.iter().map(|(n, _)| n.as_str()).collect();
            tracing::info!(file = %path.display(), keys = ?names, "API keys loaded");
            keys.set(pairs);
        }
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "cannot read the API keys file; keeping the keys loaded before");
        }
    }
    mtime
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_skips_comments_and_reports_bad_lines_without_content() {
        let (keys, bad) = parse("# keys\nops:s3cret\n\nbroken-line-with-secret\n ci : tok2 \n");
        assert_eq!(
            keys,
            vec![
                ("ops".into(), "s3cret".into()),
                ("ci".into(), "tok2".into())
            ]
        );
        assert_eq!(bad, vec!["line 4: expected name:token".to_string()]);
        assert!(!bad[0].contains("secret"));
    }

    #[test]
    fn check_fails_closed_and_names_the_key() {
        assert_eq!(
            ApiKeys::default().check(Some("Bearer x")),
            Err(AuthError::NoKeys)
        );
        let k = ApiKeys::from_pairs(vec![("ops".into(), "s3cret".into())]);
        assert_eq!(k.check(None), Err(AuthError::Missing));
        assert_eq!(k.check(Some("Basic s3cret")), Err(AuthError::Missing));
        assert_eq!(k.check(Some("Bearer s3cre")), Err(AuthError::Invalid));
        assert_eq!(k.check(Some("Bearer s3cret")), Ok("ops".into()));
    }
}
