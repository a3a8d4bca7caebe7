//! The rules of `[[peers]]` and `[cluster]`, one case each, and the election ranges the
//! agents draw from.

use std::time::Duration;

use super::Edit::{After, Append, Replace};
use super::{Case, CLUSTER_SECRET};
use crate::config::ClusterConfig;

const PEER_FRA: &str = r#"
[[peers]]
id = "eu-central-1-a"
region = "eu-central-1"
peer_url = "https://failoverd.eu-central-1.internal:7071"
"#;

/// The entry of the agent the valid config describes.
const PEER_PAR: &str = r#"
[[peers]]
id = "eu-west-3-a"
region = "eu-west-3"
peer_url = "https://failoverd.eu-west-3.internal:7071"
"#;

/// The broken rules of `[[peers]]` and `[cluster]`.
pub(super) fn cases() -> Vec<Case> {
    vec![
        // Peers.
        Case::alone(
            "peer ids are unique",
            &[Append(PEER_FRA), Append(PEER_FRA)],
            "peers[1].id",
            "agent id \"eu-central-1-a\" is used twice",
        ),
        Case::alone(
            "the agent's own peer entry names the agent's region",
            &[Append(
                r#"
[[peers]]
id = "eu-west-3-a"
region = "eu-central-1"
peer_url = "https://failoverd.eu-central-1.internal:7071"
"#,
            )],
            "peers[0].region",
            "this is the entry of this agent (agent.id \"eu-west-3-a\"), so its region must be agent.region \"eu-west-3\"",
        ),
        Case::alone(
            "the agent's own peer entry appears once",
            &[Append(PEER_PAR), Append(PEER_PAR)],
            "peers[1].id",
            "agent id \"eu-west-3-a\" is used twice",
        ),
        Case::alone(
            "a peer id is a simple name",
            &[Append(
                r#"
[[peers]]
id = "frankfurt agent"
region = "eu-central-1"
peer_url = "https://failoverd.eu-central-1.internal:7071"
"#,
            )],
            "peers[0].id",
            "may only contain letters",
        ),
        Case::alone(
            "peer region must be a configured region",
            &[Append(
                r#"
[[peers]]
id = "ap-south-1-a"
region = "ap-south-1"
peer_url = "https://failoverd.ap-south-1.internal:7071"
"#,
            )],
            "peers[0].region",
            "region \"ap-south-1\" is not one of `regions`",
        ),
        Case::alone(
            "peer_url is http or https",
            &[Append(
                r#"
[[peers]]
id = "eu-central-1-a"
region = "eu-central-1"
peer_url = "tcp://failoverd.eu-central-1.internal:7071"
"#,
            )],
            "peers[0].peer_url",
            "scheme \"tcp\" is not one of http, https",
        ),
        Case::alone(
            "peer admin_url is a URL",
            &[
                Append(PEER_FRA),
                After(
                    "peer_url = \"https://failoverd.eu-central-1.internal:7071\"",
                    r#"admin_url = "failoverd.eu-central-1.internal:7070""#,
                ),
            ],
            "peers[0].admin_url",
            "scheme \"failoverd.eu-central-1.internal\" is not one of http, https",
        ),
        // Cluster: its secret, a peer listener once there are peers, quorum and timing.
        Case::alone(
            "peers need a cluster secret",
            &[Replace(CLUSTER_SECRET, ""), Append(PEER_FRA)],
            "cluster.secret",
            "is required when peers are configured",
        ),
        Case::alone(
            "peers need a peer listener",
            &[Replace("peer_listen = \"127.0.0.1:7071\"\n", ""), Append(PEER_FRA)],
            "agent.peer_listen",
            "is required when peers are configured",
        ),
        Case::alone(
            "quorum is at least a majority",
            &[Append(PEER_FRA), After(CLUSTER_SECRET, "quorum = 1")],
            "cluster.quorum",
            "quorum 1 must be between a majority (2) and the number of agents (2)",
        ),
        Case::alone(
            "quorum is at most the number of agents",
            &[After(CLUSTER_SECRET, "quorum = 2")],
            "cluster.quorum",
            "quorum 2 must be between a majority (1) and the number of agents (1)",
        ),
        Case::alone(
            "heartbeats are well inside the election timeout",
            &[After(CLUSTER_SECRET, "heartbeat_interval = \"500ms\"")],
            "cluster.heartbeat_interval",
            "heartbeat_interval (500ms) must be > 0 and less than half of election_timeout (300ms)",
        ),
        Case::alone(
            "the lease outlasts an election",
            &[After(CLUSTER_SECRET, "lease_ttl = \"500ms\"")],
            "cluster.lease_ttl",
            "lease_ttl (500ms) must be longer than the longest wait before an election (900ms with 1 agent)",
        ),
        Case::alone(
            "stale_after is positive",
            &[After(CLUSTER_SECRET, "stale_after = \"0s\"")],
            "cluster.stale_after",
            "must be greater than 0",
        ),
        Case::alone(
            "the cluster secret is readable",
            &[Replace(CLUSTER_SECRET, "secret = { file = \"{dir}/missing\" }")],
            "cluster.secret",
            "cannot read secret file",
        ),
        Case::alone(
            "the cluster secret is not empty",
            &[Replace(CLUSTER_SECRET, "secret = { file = \"{dir}/empty\" }")],
            "cluster.secret",
            "is empty",
        ),
    ]
}

#[test]
fn agents_get_disjoint_increasing_election_ranges() {
    let cluster = ClusterConfig::default();
    let ranges: Vec<_> = (0..7).map(|r| cluster.election_range(r)).collect();
    assert_eq!(
        ranges[0],
        (Duration::from_millis(300), Duration::from_millis(450))
    );
    for pair in ranges.windows(2) {
        assert!(pair[0].0 < pair[0].1, "a range is not empty");
        assert!(pair[0].1 <= pair[1].0, "ranges do not overlap: {pair:?}");
    }
    // Three agents: the last one stands at most 1.5 s after the leader's last heartbeat.
    assert_eq!(cluster.longest_stand(3), Duration::from_millis(1500));
}
