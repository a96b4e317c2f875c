//! Polling with a deadline: the only way tests wait for something to happen.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` every `every` until it returns `Some`, or fails after `timeout` with `what`
/// and the last observation, so a failing test says what it was waiting for.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, anyhow::Error>>,
{
    let deadline = Instant::now() + timeout;
    let every = Duration::from_millis(50);
    let mut last = String::from("no observation");
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what} (last error: {last})");
        }
        tokio::time::sleep(every).await;
    }
}
