//! Waiting for a condition: poll it every 50 ms until it holds or a deadline passes. Owns no
//! servers and no processes; every other part of the harness waits through these two.

use std::time::{Duration, Instant};

use anyhow::bail;

/// Polls `cond` every 50 ms until it returns `Some`, or fails after `deadline`.
pub async fn wait_for<T>(
    what: &str,
    deadline: Duration,
    mut cond: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = cond() {
            return Ok(v);
        }
        if start.elapsed() > deadline {
            bail!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Like [`wait_for`] with an async condition.
pub async fn wait_for_async<T, F, Fut>(
    what: &str,
    deadline: Duration,
    mut cond: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = cond().await {
            return Ok(v);
        }
        if start.elapsed() > deadline {
            bail!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
