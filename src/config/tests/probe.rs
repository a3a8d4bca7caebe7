//! Where a target's probe settings come from, and their rules, one case each.

use std::time::Duration;

use super::Edit::{After, Append};
use super::{edited, ms, parse_toml, valid_toml, Case, SecretDir};
use crate::config::{
    ProbeConfig, ProbeOverrides, TargetKind, DEFAULT_FALL, DEFAULT_INTERVAL, DEFAULT_RISE,
    DEFAULT_TIMEOUT,
};

#[test]
fn probe_settings_come_from_target_then_kind_then_global_then_default() {
    let dir = SecretDir::new();
    let text = edited(
        &valid_toml(),
        &[
            Append(
                r#"
[probe]
interval = "3s"
timeout = "1s"
rise = 4

[probe.http]
timeout = "700ms"
rise = 5
"#,
            ),
            After(r#"name = "api-par""#, "probe = { rise = 6 }"),
        ],
        dir.path(),
    );
    let config = parse_toml(&text, &[]).expect("config must load");
    let probe = &config.probe;

    // Each field of this target comes from a different level.
    let (settings, from) = probe.resolve(
        TargetKind::Http,
        &config.regions[0].api[0].probe,
        "regions[0].api[0]",
    );
    assert_eq!(settings.interval, Duration::from_secs(3));
    assert_eq!(settings.timeout, ms(700));
    assert_eq!(settings.rise, 6);
    assert_eq!(settings.fall, DEFAULT_FALL);
    assert_eq!(
        from,
        [
            "probe.interval",
            "probe.http.timeout",
            "regions[0].api[0].probe.rise",
            "default fall",
        ]
    );

    // Without a target value, the kind value wins over the global one.
    let (settings, from) = probe.resolve(
        TargetKind::Http,
        &config.regions[1].api[0].probe,
        "regions[1].api[0]",
    );
    assert_eq!(settings.rise, 5);
    assert_eq!(from[2], "probe.http.rise");

    // Another kind does not see the http overrides: global values, then defaults.
    let pg = config.postgres.as_ref().expect("postgres section");
    let (settings, from) = probe.resolve(
        TargetKind::Postgres,
        &pg.members[0].probe,
        "postgres.members[0]",
    );
    assert_eq!(settings.timeout, Duration::from_secs(1));
    assert_eq!(settings.rise, 4);
    assert_eq!(
        from,
        [
            "probe.interval",
            "probe.timeout",
            "probe.rise",
            "default fall"
        ]
    );

    // Nothing set anywhere: the documented defaults.
    let (settings, from) =
        ProbeConfig::default().resolve(TargetKind::Redis, &ProbeOverrides::default(), "x");
    assert_eq!(
        (
            settings.interval,
            settings.timeout,
            settings.rise,
            settings.fall
        ),
        (
            DEFAULT_INTERVAL,
            DEFAULT_TIMEOUT,
            DEFAULT_RISE,
            DEFAULT_FALL
        )
    );
    assert_eq!(
        from,
        [
            "default interval",
            "default timeout",
            "default rise",
            "default fall"
        ]
    );
}

/// The broken rules of probe settings: `[probe]` and what each target ends up with.
pub(super) fn cases() -> Vec<Case> {
    vec![
        // Probe defaults.
        Case::alone(
            "global interval is at least 100ms",
            &[Append("[probe]\ninterval = \"50ms\"\ntimeout = \"20ms\"")],
            "probe.interval",
            "50ms is below the minimum of 100ms",
        ),
        Case::among(
            "a kind's interval is at least 100ms",
            &[Append("[probe.redis]\ninterval = \"10ms\"")],
            "probe.redis.interval",
            "10ms is below the minimum of 100ms",
        ),
        Case::among(
            "a target's interval is at least 100ms",
            &[After(
                r#"name = "pg-iad""#,
                r#"probe = { interval = "99ms" }"#,
            )],
            "postgres.members[2].probe.interval",
            "99ms is below the minimum of 100ms",
        ),
        Case::alone(
            "global timeout is above 0",
            &[Append("[probe]\ntimeout = \"0s\"")],
            "probe.timeout",
            "must be greater than 0",
        ),
        Case::alone(
            "a target's timeout is above 0",
            &[After(
                r#"name = "api-fra""#,
                r#"probe = { timeout = "0s" }"#,
            )],
            "regions[1].api[0].probe.timeout",
            "must be greater than 0",
        ),
        Case::alone(
            "global rise is at least 1",
            &[Append("[probe]\nrise = 0")],
            "probe.rise",
            "must be at least 1",
        ),
        Case::alone(
            "a kind's rise is at least 1",
            &[Append("[probe.postgres]\nrise = 0")],
            "probe.postgres.rise",
            "must be at least 1",
        ),
        Case::alone(
            "global fall is at least 1",
            &[Append("[probe]\nfall = 0")],
            "probe.fall",
            "must be at least 1",
        ),
        Case::alone(
            "a target's fall is at least 1",
            &[After(r#"name = "sessions-par""#, "probe = { fall = 0 }")],
            "redis.shards[0].members[0].probe.fall",
            "must be at least 1",
        ),
        // A target's timeout must be shorter than its interval, wherever each was set.
        Case::among(
            "timeout < interval: global timeout against the default interval",
            &[Append("[probe]\ntimeout = \"1s\"")],
            "regions[0].api[0].probe.timeout",
            "timeout (1s from probe.timeout) must be < interval (1s from default interval)",
        ),
        Case::among(
            "timeout < interval: default timeout against a kind's interval",
            &[Append("[probe.postgres]\ninterval = \"400ms\"")],
            "postgres.members[1].probe.timeout",
            "timeout (500ms from default timeout) must be < interval \
             (400ms from probe.postgres.interval)",
        ),
        Case::alone(
            "timeout < interval: a target's timeout against the default interval",
            &[After(
                r#"name = "sessions-fra""#,
                r#"probe = { timeout = "2s" }"#,
            )],
            "redis.shards[0].members[1].probe.timeout",
            "timeout (2s from redis.shards[0].members[1].probe.timeout) must be < interval \
             (1s from default interval)",
        ),
        Case::alone(
            "timeout < interval: a kind's timeout against a target's interval",
            &[
                Append("[probe]\ninterval = \"2s\"\n\n[probe.http]\ntimeout = \"1500ms\""),
                After(r#"name = "api-fra""#, r#"probe = { interval = "1s" }"#),
            ],
            "regions[1].api[0].probe.timeout",
            "timeout (1s 500ms from probe.http.timeout) must be < interval \
             (1s from regions[1].api[0].probe.interval)",
        ),
    ]
}
