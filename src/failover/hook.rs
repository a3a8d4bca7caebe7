//! The pre-failover hook: an outside check that may veto an automatic failover.
//!
//! A command gets the decision as JSON on its stdin and approves with exit status 0; a URL
//! gets it as a POST body and approves with a 2xx. Anything else is a veto, its output (first
//! 500 characters) the reason. A hook that does not answer within its timeout is killed and
//! counts as `failover.pre_hook.on_timeout` says (default: proceed).

use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use crate::config::{HookConfig, HookTimeout};

/// What the hook said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookAnswer {
    /// Go ahead; the note says how the hook answered.
    Proceed(String),
    /// Refused, and why.
    Veto(String),
}

fn clip(text: &str) -> String {
    crate::util::truncate_chars(text.trim(), 500)
}

/// Asks the hook about `decision` (JSON).
pub async fn ask(hook: &HookConfig, decision: &[u8]) -> HookAnswer {
    let timeout = hook.timeout();
    let asked = tokio::time::timeout(timeout, run(hook, decision)).await;
    match asked {
        Ok(answer) => answer,
        Err(_) => {
            let note = format!(
                "the pre-failover hook did not answer within {}",
                humantime::format_duration(timeout)
            );
            match hook.on_timeout {
                HookTimeout::Proceed => HookAnswer::Proceed(format!("{note}; proceeding")),
                HookTimeout::Veto => HookAnswer::Veto(note),
            }
        }
    }
}

async fn run(hook: &HookConfig, decision: &[u8]) -> HookAnswer {
    if let Some(argv) = &hook.command {
        let Some((program, args)) = argv.split_first() else {
            return HookAnswer::Veto("the pre-failover hook has an empty command".into());
        };
        let child = tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => return HookAnswer::Veto(format!("cannot run the pre-failover hook: {e}")),
        };
        if let Some(mut stdin) = child.stdin.take() {
            // A hook that does not read its input is fine.
            let _ignored = stdin.write_all(decision).await;
        }
        match child.wait_with_output().await {
            Ok(out) if out.status.success() => HookAnswer::Proceed(format!(
                "approved by the hook: {}",
                clip(&String::from_utf8_lossy(&out.stdout))
            )),
            Ok(out) => {
                let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
                text.push_str(&String::from_utf8_lossy(&out.stdout));
                HookAnswer::Veto(format!(
                    "the pre-failover hook vetoed it ({}): {}",
                    out.status,
                    clip(&text)
                ))
            }
            Err(e) => HookAnswer::Veto(format!("the pre-failover hook failed: {e}")),
        }
    } else if let Some(url) = &hook.url {
        let client = match reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
        {
            Ok(c) => c,
            Err(e) => return HookAnswer::Veto(format!("cannot call the pre-failover hook: {e}")),
        };
        let sent = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(decision.to_vec())
            .send()
            .await;
        match sent {
            Ok(answer) => {
                let status = answer.status();
                let body = answer.text().await.unwrap_or_default();
                if status.is_success() {
                    HookAnswer::Proceed(format!("approved by the hook: {}", clip(&body)))
                } else {
                    HookAnswer::Veto(format!(
                        "the pre-failover hook vetoed it ({status}): {}",
                        clip(&body)
                    ))
                }
            }
            Err(e) => HookAnswer::Veto(format!(
                "the pre-failover hook could not be reached: {}",
                crate::util::error_chain(&e)
            )),
        }
    } else {
        HookAnswer::Veto("the pre-failover hook has neither command nor url".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(argv: &[&str], timeout_ms: u64, on_timeout: HookTimeout) -> HookConfig {
        HookConfig {
            command: Some(argv.iter().map(|s| s.to_string()).collect()),
            url: None,
            timeout: Some(std::time::Duration::from_millis(timeout_ms)),
            on_timeout,
        }
    }

    #[tokio::test]
    async fn a_command_approves_with_status_0_and_vetoes_otherwise_with_its_words() {
        let yes = hook(
            &["sh", "-c", "cat >/dev/null; echo ok"],
            5000,
            HookTimeout::Veto,
        );
        assert_eq!(
            ask(&yes, b"{}").await,
            HookAnswer::Proceed("approved by the hook: ok".into())
        );
        let no = hook(
            &["sh", "-c", "echo 'change freeze until 06:00' >&2; exit 3"],
            5000,
            HookTimeout::Proceed,
        );
        match ask(&no, b"{}").await {
            HookAnswer::Veto(reason) => {
                assert!(reason.contains("change freeze until 06:00"), "{reason}");
                assert!(reason.contains("exit status: 3"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn the_hook_sees_the_decision() {
        let check = hook(
            &["sh", "-c", "grep -q region_down"],
            5000,
            HookTimeout::Veto,
        );
        assert!(matches!(
            ask(&check, br#"{"kind":"region_down"}"#).await,
            HookAnswer::Proceed(_)
        ));
        assert!(matches!(
            ask(&check, br#"{"kind":"failback"}"#).await,
            HookAnswer::Veto(_)
        ));
    }

    #[tokio::test]
    async fn a_hook_that_hangs_counts_as_its_timeout_setting_says() {
        let slow = hook(&["sleep", "5"], 100, HookTimeout::Proceed);
        assert!(
            matches!(ask(&slow, b"{}").await, HookAnswer::Proceed(n) if n.contains("did not answer"))
        );
        let slow = hook(&["sleep", "5"], 100, HookTimeout::Veto);
        assert!(
            matches!(ask(&slow, b"{}").await, HookAnswer::Veto(r) if r.contains("did not answer"))
        );
    }
}
