//! Agent configurations for tests: the text every single-agent test starts from. Runs
//! nothing; the agents that read these are in `agent.rs`.

/// The agent section and one region for test configs; `{admin}` is filled in by
/// [`super::TestAgent::start`].
pub fn base_config(probe: &str) -> String {
    format!(
        r#"
[agent]
id = "test-agent"
region = "r1"
admin_listen = "{{admin}}"
data_dir = "{{data_dir}}"
probe_scope = "all"

# These agents watch and report; failing over is tested with several agents.
[failover]
automatic = false

[probe]
{probe}

[[regions]]
name = "r1"
"#
    )
}
