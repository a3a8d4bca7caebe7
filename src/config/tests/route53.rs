//! The rules of `[route53]`, one case each.

use super::Case;
use super::Edit::{After, Append, Replace};

/// The broken rules of `[route53]`.
pub(super) fn cases() -> Vec<Case> {
    vec![
        // Route53.
        Case::alone(
            "zone_id is not empty",
            &[Replace(r#"zone_id = "Z0EXAMPLE""#, r#"zone_id = " ""#)],
            "route53.zone_id",
            "must not be empty",
        ),
        Case::alone(
            "record_name is not empty",
            &[Replace(
                r#"record_name = "api.example.com.""#,
                r#"record_name = """#,
            )],
            "route53.record_name",
            "must not be empty",
        ),
        Case::alone(
            "record_type is A, AAAA or CNAME",
            &[After("zone_id = ", r#"record_type = "MX""#)],
            "route53.record_type",
            "\"MX\" is not one of A, AAAA, CNAME",
        ),
        Case::alone(
            "ttl is at least 1",
            &[After("zone_id = ", "ttl = 0")],
            "route53.ttl",
            "ttl 0 is out of range 1..=172800",
        ),
        Case::alone(
            "ttl is at most two days",
            &[After("zone_id = ", "ttl = 172801")],
            "route53.ttl",
            "ttl 172801 is out of range 1..=172800",
        ),
        Case::alone(
            "endpoint_url is an http(s) URL",
            &[After("zone_id = ", r#"endpoint_url = "localhost:4566""#)],
            "route53.endpoint_url",
            "scheme \"localhost\" is not one of http, https",
        ),
        Case::alone(
            "every record is for a configured region",
            &[Append(
                "[route53.regions.ap-south-1]\nset_identifier = \"ap-south-1\"\nvalue = \"lb-bom.example.com\"",
            )],
            "route53.regions.ap-south-1",
            "region \"ap-south-1\" is not one of `regions`",
        ),
        Case::alone(
            "every region has a record",
            &[Replace(
                "[route53.regions.us-east-1]\nset_identifier = \"us-east-1\"\nvalue = \"lb-iad.example.com\"\n",
                "",
            )],
            "route53.regions",
            "region \"us-east-1\" has no weighted record",
        ),
        Case::alone(
            "set identifiers are unique",
            &[Replace(
                r#"set_identifier = "us-east-1""#,
                r#"set_identifier = "eu-west-3""#,
            )],
            "route53.regions.us-east-1.set_identifier",
            "set identifier \"eu-west-3\" is used twice",
        ),
        Case::alone(
            "set identifier is not empty",
            &[Replace(
                r#"set_identifier = "eu-central-1""#,
                r#"set_identifier = """#,
            )],
            "route53.regions.eu-central-1.set_identifier",
            "must not be empty",
        ),
        Case::alone(
            "record value is not empty",
            &[Replace(
                r#"value = "lb-fra.example.com""#,
                r#"value = " ""#,
            )],
            "route53.regions.eu-central-1.value",
            "must not be empty",
        ),
        Case::alone(
            "a writer record is for a group of this config",
            &[Append("[route53.writers.\"postgres/other\"]\nname = \"db.example.com.\"")],
            "route53.writers.\"postgres/other\"",
            "\"postgres/other\" is not postgres/<cluster> or redis/<replication shard> of this config",
        ),
        Case::alone(
            "a writer record has a known type",
            &[Append(
                "[route53.writers.\"postgres/main\"]\nname = \"db.example.com.\"\nrecord_type = \"TXT\"",
            )],
            "route53.writers.\"postgres/main\".record_type",
            "\"TXT\" is not one of A, AAAA, CNAME",
        ),
        Case::alone(
            "insync_timeout is more than 0",
            &[After("zone_id = ", r#"insync_timeout = "0s""#)],
            "route53.insync_timeout",
            "must be more than 0",
        ),
        Case::alone(
            "static credentials must be readable",
            &[After(
                "zone_id = ",
                concat!(
                    r#"credentials = { access_key_id = { env = "NO_SUCH_KEY_ID_VAR" }, "#,
                    r#"secret_access_key = { file = ""#,
                    env!("CARGO_MANIFEST_DIR"),
                    r#"/src/config/testdata/cluster-secret" } }"#
                ),
            )],
            "route53.credentials.access_key_id",
            "NO_SUCH_KEY_ID_VAR",
        ),
    ]
}
