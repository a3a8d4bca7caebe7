//! The rules of regions and their API targets, Postgres and Redis, one case each.

use super::Edit::{After, Append, Prepend, Replace};
use super::{Case, POSTGRES, REGIONS};

/// The broken rules of `[[regions]]`, `[postgres]` and `[redis]`.
pub(super) fn cases() -> Vec<Case> {
    vec![
        // Regions.
        Case::alone(
            "region names are unique",
            &[Append("[[regions]]\nname = \"eu-central-1\"")],
            "regions[3].name",
            "region \"eu-central-1\" is defined twice",
        ),
        Case::alone(
            "weight is at most 255",
            &[Replace(
                "name = \"eu-central-1\"\nweight = 100",
                "name = \"eu-central-1\"\nweight = 256",
            )],
            "regions[1].weight",
            "weight 256 is out of range 0..=255",
        ),
        Case::among(
            "at least one region",
            &[Replace(REGIONS, ""), Prepend("regions = []")],
            "regions",
            "at least one region is required",
        ),
        Case::among(
            "region name is a simple name",
            &[Append("[[regions]]\nname = \"ap south 1\"")],
            "regions[3].name",
            "\"ap south 1\" may only contain",
        ),
        // API targets.
        Case::alone(
            "API target names are unique within a region",
            &[After(
                r#"url = "https://api.us-east-1.example.com/healthz""#,
                r#"
[[regions.api]]
name = "api-iad"
url = "https://api2.us-east-1.example.com/healthz""#,
            )],
            "regions[2].api[1].name",
            "API target \"api-iad\" is defined twice in region \"us-east-1\"",
        ),
        Case::alone(
            "API target name is a simple name",
            &[Replace(r#"name = "api-fra""#, r#"name = "api fra""#)],
            "regions[1].api[0].name",
            "\"api fra\" may only contain",
        ),
        Case::alone(
            "API url is a URL",
            &[Replace(
                "https://api.eu-central-1.example.com/healthz",
                "api.eu-central-1.example.com/healthz",
            )],
            "regions[1].api[0].url",
            "is not a valid URL",
        ),
        Case::alone(
            "API url is http or https",
            &[Replace(
                "https://api.us-east-1.example.com/healthz",
                "ftp://api.us-east-1.example.com/healthz",
            )],
            "regions[2].api[0].url",
            "scheme \"ftp\" is not one of http, https",
        ),
        Case::alone(
            "expected statuses are HTTP statuses",
            &[After(r#"name = "api-par""#, "expect_status = [200, 99]")],
            "regions[0].api[0].expect_status[1]",
            "99 is not an HTTP status (100..=599)",
        ),
        Case::alone(
            "json_pointer starts with '/'",
            &[After(r#"name = "api-par""#, r#"json_pointer = "status""#)],
            "regions[0].api[0].json_pointer",
            "\"status\" is not a JSON pointer",
        ),
        Case::alone(
            "json_equals needs json_pointer",
            &[After(r#"name = "api-par""#, r#"json_equals = "ok""#)],
            "regions[0].api[0].json_equals",
            "needs json_pointer",
        ),
        Case::alone(
            "header names are valid",
            &[After(
                r#"name = "api-fra""#,
                r#"headers = { "X Probe" = "failoverd" }"#,
            )],
            "regions[1].api[0].headers.X Probe",
            "\"X Probe\" is not a valid header name",
        ),
        Case::alone(
            "ca_file exists",
            &[After(
                r#"name = "api-par""#,
                r#"ca_file = "{dir}/missing-ca.pem""#,
            )],
            "regions[0].api[0].ca_file",
            "missing-ca.pem",
        ),
        Case::alone(
            "max_latency is below the probe timeout",
            &[After(r#"name = "api-iad""#, r#"max_latency = "500ms""#)],
            "regions[2].api[0].max_latency",
            "max_latency (500ms) must be < the probe timeout (500ms)",
        ),
        // Postgres.
        Case::alone(
            "Postgres has members",
            &[Replace(POSTGRES, "\n[postgres]\nmembers = []\n")],
            "postgres.members",
            "at least one member is required",
        ),
        Case::alone(
            "postgres.home names a member",
            &[Replace(
                "cluster = \"main\"",
                "cluster = \"main\"\nhome = \"pg-mars\"",
            )],
            "postgres.home",
            "\"pg-mars\" is not the name of a member in postgres.members",
        ),
        Case::alone(
            "postgres.home may be primary",
            &[
                Replace(
                    "cluster = \"main\"",
                    "cluster = \"main\"\nhome = \"pg-iad\"",
                ),
                After(
                    "dsn = \"host=pg-iad.internal port=5432 user=failoverd dbname=postgres\"",
                    "\nno_failover = true",
                ),
            ],
            "postgres.home",
            "member \"pg-iad\" has no_failover = true: it can never be primary",
        ),
        Case::alone(
            "a Redis shard's home names one of its members",
            &[After(r#"mode = "replication""#, r#"home = "r-mars""#)],
            "redis.shards[0].home",
            "\"r-mars\" is not the name of a member in redis.shards[0].members",
        ),
        Case::alone(
            "a Redis Cluster has no home",
            &[After(r#"mode = "cluster""#, r#"home = "cache-par""#)],
            "redis.shards[1].home",
            "is only used with mode = \"replication\"",
        ),
        Case::alone(
            "Postgres cluster name is a simple name",
            &[Replace(r#"cluster = "main""#, r#"cluster = "main db""#)],
            "postgres.cluster",
            "\"main db\" may only contain",
        ),
        Case::alone(
            "Postgres member names are unique",
            &[Replace(r#"name = "pg-fra""#, r#"name = "pg-par""#)],
            "postgres.members[1].name",
            "member \"pg-par\" is defined twice",
        ),
        Case::alone(
            "Postgres member name is a simple name",
            &[Replace(r#"name = "pg-fra""#, r#"name = "pg fra""#)],
            "postgres.members[1].name",
            "\"pg fra\" may only contain",
        ),
        Case::alone(
            "Postgres member region is a configured region",
            &[Replace(
                "name = \"pg-iad\"\nregion = \"us-east-1\"",
                "name = \"pg-iad\"\nregion = \"us-west-2\"",
            )],
            "postgres.members[2].region",
            "region \"us-west-2\" is not one of `regions`",
        ),
        Case::alone(
            "Postgres DSN parses",
            &[Replace(
                "host=pg-fra.internal port=5432",
                "host=pg-fra.internal port=five",
            )],
            "postgres.members[1].dsn",
            "not a valid DSN",
        ),
        Case::alone(
            "Postgres DSN holds no password",
            &[Replace(
                "host=pg-iad.internal",
                "host=pg-iad.internal password=hunter2",
            )],
            "postgres.members[2].dsn",
            "must not contain a password",
        ),
        Case::alone(
            "Postgres DSN names a host",
            &[Replace("host=pg-par.internal ", "")],
            "postgres.members[0].dsn",
            "must name a host",
        ),
        Case::alone(
            "some Postgres member may be promoted",
            &[
                After(r#"name = "pg-par""#, "no_failover = true"),
                After(r#"name = "pg-fra""#, "no_failover = true"),
                After(r#"name = "pg-iad""#, "no_failover = true"),
            ],
            "postgres.members",
            "every member has no_failover = true",
        ),
        Case::alone(
            "the Postgres password is readable",
            &[After(
                r#"cluster = "main""#,
                r#"password = { file = "{dir}/missing" }"#,
            )],
            "postgres.password",
            "cannot read secret file",
        ),
        Case::alone(
            "a Postgres member's password is not empty",
            &[After(
                r#"name = "pg-fra""#,
                r#"password = { file = "{dir}/empty" }"#,
            )],
            "postgres.members[1].password",
            "is empty",
        ),
        Case::alone(
            "a fence command names a program",
            &[After("[postgres]", "fence = { command = [] }")],
            "postgres.fence.command",
            "must name a program",
        ),
        Case::alone(
            "revoke_login names a role",
            &[After(
                "[postgres]",
                "fence = { revoke_login = \"app role\" }",
            )],
            "postgres.fence.revoke_login",
            "may only contain letters",
        ),
        Case::alone(
            "the replication sslmode is one libpq knows",
            &[After(
                r#"cluster = "main""#,
                r#"replication = { sslmode = "sure" }"#,
            )],
            "postgres.replication.sslmode",
            "\"sure\" is not one of disable, allow, prefer, require, verify-ca, verify-full",
        ),
        Case::alone(
            "the replication user is not empty",
            &[After(
                r#"cluster = "main""#,
                r#"replication = { user = "" }"#,
            )],
            "postgres.replication.user",
            "must not be empty",
        ),
        Case::alone(
            "synchronous quorum asks for at least one confirmation",
            &[After(
                r#"cluster = "main""#,
                r#"synchronous = { mode = "quorum", count = 0 }"#,
            )],
            "postgres.synchronous.count",
            "must be at least 1",
        ),
        Case::alone(
            "a strict synchronous quorum can be met from every region",
            &[After(
                r#"cluster = "main""#,
                r#"synchronous = { mode = "quorum", count = 3 }"#,
            )],
            "postgres.synchronous.count",
            "only 2 member(s) that may be promoted run elsewhere",
        ),
        // Redis.
        Case::alone(
            "Redis self-fencing asks for at least one replica",
            &[Prepend("[redis.self_fencing]\nreplicas = 0")],
            "redis.self_fencing.replicas",
            "must be at least 1",
        ),
        Case::alone(
            "Redis self-fencing's lag is whole seconds",
            &[Prepend("[redis.self_fencing]\nmax_lag = \"1500ms\"")],
            "redis.self_fencing.max_lag",
            "whole number of seconds",
        ),
        Case::alone(
            "a Redis shard's password is readable",
            &[After(
                r#"name = "cache""#,
                r#"password = { file = "{dir}/missing" }"#,
            )],
            "redis.shards[1].password",
            "cannot read secret file",
        ),
        Case::alone(
            "Redis shard names are unique",
            &[Append(
                r#"
[[redis.shards]]
name = "sessions"
mode = "replication"

[[redis.shards.members]]
name = "sessions-iad"
region = "us-east-1"
url = "redis://sessions-iad.internal:6379"
"#,
            )],
            "redis.shards[2].name",
            "shard \"sessions\" is defined twice",
        ),
        Case::alone(
            "Redis shard name is a simple name",
            &[Replace(r#"name = "cache""#, r#"name = "hot cache""#)],
            "redis.shards[1].name",
            "\"hot cache\" may only contain",
        ),
        Case::alone(
            "Redis shard has members",
            &[Append(
                "[[redis.shards]]\nname = \"queues\"\nmode = \"replication\"\nmembers = []",
            )],
            "redis.shards[2].members",
            "at least one member is required",
        ),
        Case::alone(
            "Redis member names are unique within a shard",
            &[Replace(r#"name = "cache-fra""#, r#"name = "cache-par""#)],
            "redis.shards[1].members[1].name",
            "member \"cache-par\" is defined twice in shard \"cache\"",
        ),
        Case::alone(
            "Redis member region is a configured region",
            &[Replace(
                "name = \"sessions-fra\"\nregion = \"eu-central-1\"",
                "name = \"sessions-fra\"\nregion = \"eu-north-1\"",
            )],
            "redis.shards[0].members[1].region",
            "region \"eu-north-1\" is not one of `regions`",
        ),
        Case::alone(
            "Redis URL holds no password",
            &[Replace(
                "redis://sessions-fra.internal:6379",
                "redis://:hunter2@sessions-fra.internal:6379",
            )],
            "redis.shards[0].members[1].url",
            "must not contain a password",
        ),
        Case::alone(
            "Redis URL is redis or rediss",
            &[Replace(
                "redis://sessions-fra.internal:6379",
                "http://sessions-fra.internal:6379",
            )],
            "redis.shards[0].members[1].url",
            "scheme \"http\" is not one of redis, rediss",
        ),
        Case::alone(
            "Redis members of a shard have distinct addresses",
            &[Replace(
                "rediss://cache-iad.internal:6380",
                "rediss://cache-par.internal:6380",
            )],
            "redis.shards[1].members[2].url",
            "address \"rediss://cache-par.internal:6380\" is used by two members",
        ),
        Case::alone(
            "Redis addresses compare with the default port 6379 filled in",
            &[Replace(
                "redis://sessions-fra.internal:6379",
                "redis://sessions-par.internal",
            )],
            "redis.shards[0].members[1].url",
            "address \"redis://sessions-par.internal\" is used by two members",
        ),
        Case::alone(
            "Redis addresses compare host names case-insensitively",
            &[Replace(
                "rediss://cache-fra.internal:6380",
                "rediss://Cache-Par.internal:6380",
            )],
            "redis.shards[1].members[1].url",
            "is used by two members",
        ),
        Case::alone(
            "Redis ca_file exists",
            &[After(
                r#"mode = "cluster""#,
                r#"ca_file = "/nonexistent/ca.pem""#,
            )],
            "redis.shards[1].ca_file",
            "cannot read /nonexistent/ca.pem",
        ),
        Case::alone(
            "Redis ca_file only with rediss:// members",
            &[After(
                r#"mode = "replication""#,
                concat!("ca_file = \"", env!("CARGO_MANIFEST_DIR"), "/Cargo.toml\""),
            )],
            "redis.shards[0].ca_file",
            "is only used with TLS: every member's url must start with rediss://",
        ),
        Case::alone(
            "Redis cluster_node_timeout only in cluster mode",
            &[After(
                r#"mode = "replication""#,
                r#"cluster_node_timeout = "5s""#,
            )],
            "redis.shards[0].cluster_node_timeout",
            "is only used with mode = \"cluster\"",
        ),
        Case::alone(
            "Redis cluster_node_timeout is not zero",
            &[After(
                r#"mode = "cluster""#,
                r#"cluster_node_timeout = "0s""#,
            )],
            "redis.shards[1].cluster_node_timeout",
            "must be greater than 0",
        ),
    ]
}
