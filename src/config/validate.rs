//! [`Config::validate`], the second step of loading: the rules that span fields, checked once
//! serde has parsed the file.
//!
//! Each section's file holds that section's rules (`validate_agent` in `agent.rs`, and so on);
//! this file calls them in a fixed order, which is the order issues are reported in, so a
//! section whose rules are reported in more than one place (`[cluster]`, `[postgres]`) has one
//! function per place. [`Validator`] collects the issues and checks what every section
//! shares: simple names, configured regions, URLs, secrets that resolve and files that exist.
//! Reading secrets and file metadata is the only I/O here.

use std::collections::HashSet;
use std::path::Path;

use super::agent::{validate_admin, validate_agent, validate_tls};
use super::cluster::{validate_cluster, validate_peers, validate_stale_after};
use super::failover::{validate_failover, validate_notify};
use super::probe::validate_probe;
use super::route53::validate_route53;
use super::targets::{
    validate_postgres, validate_postgres_fence, validate_postgres_rejoin,
    validate_postgres_replication, validate_redis, validate_regions,
};
use super::{Config, ConfigIssue, SecretRef};

impl Config {
    /// Checks every rule that spans fields; returns all broken rules (empty when valid).
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut v = Validator::default();
        let regions: HashSet<&str> = self.regions.iter().map(|r| r.name.as_str()).collect();
        let agents = self.other_peers().count() + 1;

        validate_agent(&mut v, &self.agent, &regions);
        validate_peers(&mut v, &self.peers, &self.agent, &regions);
        validate_admin(&mut v, &self.admin);
        validate_cluster(&mut v, &self.cluster, &self.agent, agents);
        if let Some(pg) = &self.postgres {
            validate_postgres_fence(&mut v, &pg.fence);
            if let Some(rejoin) = &pg.rejoin {
                validate_postgres_rejoin(&mut v, rejoin);
            }
        }
        if let Some(tls) = &self.tls {
            validate_tls(&mut v, tls, &self.peers);
        }
        validate_stale_after(&mut v, &self.cluster);
        validate_probe(&mut v, &self.probe);
        validate_regions(&mut v, &self.regions, &self.probe);
        if let Some(pg) = &self.postgres {
            validate_postgres(&mut v, pg, &regions, &self.probe);
        }
        validate_redis(&mut v, &self.redis, &regions, &self.probe);
        if let Some(r53) = &self.route53 {
            validate_route53(&mut v, r53, self, &regions);
        }
        validate_failover(&mut v, &self.failover);
        if let Some(notify) = &self.notify {
            validate_notify(&mut v, notify);
        }
        if let Some(pg) = &self.postgres {
            validate_postgres_replication(&mut v, &pg.replication);
        }
        v.issues
    }
}

/// The issues found so far, and the checks every section shares.
#[derive(Default)]
pub(super) struct Validator {
    issues: Vec<ConfigIssue>,
}

impl Validator {
    /// Records that the rule `message` is broken at `key`.
    pub(super) fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.issues.push(ConfigIssue {
            key: key.into(),
            message: message.into(),
        });
    }

    /// Names appear in target ids, metric labels and URLs: keep them simple.
    pub(super) fn name(&mut self, key: &str, name: &str) {
        if name.is_empty() {
            self.push(key, "must not be empty");
        } else if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            self.push(
                key,
                format!("{name:?} may only contain letters, digits, '-', '_' and '.'"),
            );
        }
    }

    /// A region named anywhere must be one of `regions`.
    pub(super) fn region(&mut self, key: &str, region: &str, regions: &HashSet<&str>) {
        if !regions.contains(region) {
            self.push(key, format!("region {region:?} is not one of `regions`"));
        }
    }

    /// A URL must parse, use one of `schemes` and name a host; returns it when it does.
    pub(super) fn url(&mut self, key: &str, text: &str, schemes: &[&str]) -> Option<url::Url> {
        match url::Url::parse(text) {
            Err(e) => {
                self.push(key, format!("{text:?} is not a valid URL: {e}"));
                None
            }
            Ok(url) if !schemes.contains(&url.scheme()) => {
                self.push(
                    key,
                    format!(
                        "scheme {:?} is not one of {}",
                        url.scheme(),
                        schemes.join(", ")
                    ),
                );
                None
            }
            Ok(url) if url.host_str().is_none_or(str::is_empty) => {
                self.push(key, format!("{text:?} has no host"));
                None
            }
            Ok(url) => Some(url),
        }
    }

    /// A secret must resolve now, so a missing file fails the check rather than a failover.
    pub(super) fn secret(&mut self, key: &str, secret: &SecretRef) {
        if let Err(e) = secret.load() {
            self.push(key, e.to_string());
        }
    }

    /// A file named in the config must exist and be reachable now, not at first use.
    pub(super) fn readable(&mut self, key: &str, path: &Path) {
        if let Err(e) = std::fs::metadata(path) {
            self.push(key, format!("cannot read {}: {e}", path.display()));
        }
    }
}
