//! The rules of `[failover]` and `[notify]`, one case each.

use super::Case;
use super::Edit::Append;

/// The broken rules of `[failover]` and `[notify]`.
pub(super) fn cases() -> Vec<Case> {
    vec![
        // Failover.
        Case::alone(
            "a pre-failover hook is a command or a URL, not both",
            &[Append(
                "[failover]\npre_hook = { command = [\"/bin/true\"], url = \"http://approve.internal/\" }",
            )],
            "failover.pre_hook",
            "set exactly one of `command` and `url`",
        ),
        Case::alone(
            "a pre-failover hook URL is http(s)",
            &[Append("[failover]\npre_hook = { url = \"ftp://approve.internal/\" }")],
            "failover.pre_hook.url",
            "scheme \"ftp\" is not one of http, https",
        ),
        Case::alone(
            "a step gets at least one attempt",
            &[Append("[failover]\nstep_attempts = 0")],
            "failover.step_attempts",
            "must be at least 1",
        ),
        Case::alone(
            "a step timeout is more than 0",
            &[Append("[failover]\nstep_timeout = \"0s\"")],
            "failover.step_timeout",
            "must be more than 0",
        ),
        // Notify.
        Case::alone(
            "the webhook URL is a readable secret",
            &[Append("[notify]\nwebhook_url = { env = \"NO_SUCH_WEBHOOK_VAR\" }")],
            "notify.webhook_url",
            "NO_SUCH_WEBHOOK_VAR",
        ),
    ]
}
