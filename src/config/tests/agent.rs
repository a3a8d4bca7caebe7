//! The rules of `[agent]` and `[admin]`, one case each.

use super::Case;
use super::Edit::{After, Append, Replace};

/// The broken rules of `[agent]` and `[admin]`.
pub(super) fn cases() -> Vec<Case> {
    vec![
        // Agent.
        Case::alone(
            "agent region must be a configured region",
            &[Replace(
                "id = \"eu-west-3-a\"\nregion = \"eu-west-3\"",
                "id = \"eu-west-3-a\"\nregion = \"eu-west-9\"",
            )],
            "agent.region",
            "region \"eu-west-9\" is not one of `regions`",
        ),
        Case::alone(
            "peer and admin listeners differ",
            &[Replace(
                r#"peer_listen = "127.0.0.1:7071""#,
                r#"peer_listen = "127.0.0.1:7070""#,
            )],
            "agent.peer_listen",
            "must differ from agent.admin_listen",
        ),
        Case::alone(
            "data_dir is not empty",
            &[Replace(
                r#"data_dir = "/var/lib/failoverd""#,
                r#"data_dir = """#,
            )],
            "agent.data_dir",
            "must not be empty",
        ),
        Case::alone(
            "shutdown_grace is above 0",
            &[After("data_dir = ", r#"shutdown_grace = "0s""#)],
            "agent.shutdown_grace",
            "must be greater than 0",
        ),
        Case::alone(
            "agent id is a simple name",
            &[Replace(r#"id = "eu-west-3-a""#, r#"id = "eu west 3""#)],
            "agent.id",
            "\"eu west 3\" may only contain letters, digits, '-', '_' and '.'",
        ),
        Case::alone(
            "agent id is not empty",
            &[Replace(r#"id = "eu-west-3-a""#, r#"id = """#)],
            "agent.id",
            "must not be empty",
        ),
        // Admin tokens.
        Case::alone(
            "admin token names are unique",
            &[Append(
                r#"
[[admin.tokens]]
name = "oncall"
secret = { file = "{dir}/token" }

[[admin.tokens]]
name = "oncall"
secret = { file = "{dir}/token" }
"#,
            )],
            "admin.tokens[1].name",
            "token name \"oncall\" is used twice",
        ),
        Case::alone(
            "admin token name is a simple name",
            &[Append(
                r#"
[[admin.tokens]]
name = "on call"
secret = { file = "{dir}/token" }
"#,
            )],
            "admin.tokens[0].name",
            "\"on call\" may only contain",
        ),
        Case::alone(
            "an admin token's secret file is readable",
            &[Append(
                r#"
[[admin.tokens]]
name = "oncall"
secret = { file = "{dir}/missing" }
"#,
            )],
            "admin.tokens[0].secret",
            "cannot read secret file",
        ),
        Case::alone(
            "an admin token's secret variable is set",
            &[Append(
                r#"
[[admin.tokens]]
name = "oncall"
secret = { env = "FAILOVERD_TEST_VARIABLE_NOBODY_SETS" }
"#,
            )],
            "admin.tokens[0].secret",
            "environment variable FAILOVERD_TEST_VARIABLE_NOBODY_SETS is not set",
        ),
    ]
}
