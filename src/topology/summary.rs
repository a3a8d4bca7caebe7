//! The readable summary `failoverd check-config` prints for a valid configuration:
//! [`Config::summary`], built from the [`Topology`] so that it lists exactly the targets the
//! agent would probe.
//!
//! It lives here, not in `crate::config`, so that the configuration does not depend on the
//! model built from it. It only formats text.

/// Appends one formatted line to a `String`.
macro_rules! push_line {
    ($out:ident, $($arg:tt)*) => {{
        $out.push_str(&format!($($arg)*));
        $out.push('\n');
    }};
}

use super::{TargetSpec, Topology};
use crate::config::{Config, ProbeScope, TargetKind};

impl Config {
    /// A readable summary of the topology: regions, targets with their probe settings,
    /// datastores, DNS records and peers.
    pub fn summary(&self) -> String {
        let topology = Topology::from_config(self);
        let probed = topology.probed_from(&self.agent.region, self.agent.probe_scope);
        let mut out = String::new();
        let scope = match self.agent.probe_scope {
            ProbeScope::OwnRegion => "API targets everywhere, datastores in its own region",
            ProbeScope::All => "every target",
        };
        push_line!(
            out,
            "agent {} in region {} (admin {}, peer {}, data {})",
            self.agent.id,
            self.agent.region,
            self.agent.admin_listen,
            self.agent
                .peer_listen
                .map(|a| a.to_string())
                .unwrap_or_else(|| "-".into()),
            self.agent.data_dir.display()
        );
        push_line!(
            out,
            "probes {} of {} targets: {scope}",
            probed.len(),
            topology.targets.len()
        );
        if self.other_peers().next().is_some() {
            push_line!(out, "\npeers:");
            for p in self.other_peers() {
                push_line!(out, "  {:<20} {:<16} {}", p.id, p.region, p.peer_url);
            }
        }
        push_line!(out, "\nregions:");
        for region in &self.regions {
            push_line!(out, "  {:<16} weight {}", region.name, region.weight);
        }
        push_line!(
            out,
            "\n  {:<44} {:<9} {:<14} {:>9} {:>9} {:>4} {:>4}  detail",
            "TARGET",
            "KIND",
            "REGION",
            "INTERVAL",
            "TIMEOUT",
            "RISE",
            "FALL"
        );
        for t in &topology.targets {
            let mark = if probed.iter().any(|p| p.id == t.id) {
                "*"
            } else {
                " "
            };
            let detail = match &t.spec {
                TargetSpec::Http(h) => format!("GET {} ({:?})", h.url, h.connection),
                TargetSpec::Postgres { member, .. } => {
                    let mut d = format!("priority {}", member.priority);
                    if member.no_failover {
                        d.push_str(", no_failover");
                    }
                    d
                }
                TargetSpec::Redis { mode, member, .. } => format!("{mode:?} {}", member.url),
            };
            push_line!(
                out,
                "{mark} {:<44} {:<9} {:<14} {:>9} {:>9} {:>4} {:>4}  {detail}",
                t.id.as_str(),
                t.kind().as_str(),
                t.region,
                humantime::format_duration(t.settings.interval).to_string(),
                humantime::format_duration(t.settings.timeout).to_string(),
                t.settings.rise,
                t.settings.fall
            );
        }
        push_line!(out, "  (* = probed by this agent)");
        if let Some(pg) = &self.postgres {
            match &pg.rejoin {
                Some(rejoin) => push_line!(
                    out,
                    "\npostgres rejoin: {} (timeout {}); pg_rewind needs wal_log_hints or data \
                     checksums, and full_page_writes, on every member: `failoverd drill` shows \
                     each primary's",
                    rejoin.command.join(" "),
                    humantime::format_duration(rejoin.timeout)
                ),
                None => push_line!(
                    out,
                    "\npostgres rejoin: none; an old primary stays fenced until it is rejoined by \
                     hand ([postgres.rejoin], docs/failover.md)"
                ),
            }
        }
        if let Some(r53) = &self.route53 {
            push_line!(
                out,
                "\nroute53: zone {} record {} {} ttl {}{}",
                r53.zone_id,
                r53.record_name,
                r53.record_type,
                r53.ttl,
                r53.endpoint_url
                    .as_deref()
                    .map(|u| format!(" via {u}"))
                    .unwrap_or_default()
            );
            for (region, rec) in &r53.regions {
                push_line!(
                    out,
                    "  {region:<16} set {:<20} -> {}",
                    rec.set_identifier,
                    rec.value
                );
            }
        }
        let kinds = [TargetKind::Http, TargetKind::Postgres, TargetKind::Redis]
            .map(|k| topology.targets.iter().filter(|t| t.kind() == k).count());
        push_line!(
            out,
            "\n{} regions, {} HTTP targets, {} Postgres members, {} Redis members, {} peers",
            self.regions.len(),
            kinds[0],
            kinds[1],
            kinds[2],
            self.other_peers().count()
        );
        out
    }
}
