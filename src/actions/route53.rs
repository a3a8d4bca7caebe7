//! Route53: the weighted records that steer traffic between regions, fenced by an epoch.
//!
//! Every change is one ChangeBatch that DELETEs the TXT record holding the epoch the log
//! last wrote and CREATEs the next one, next to the weight UPSERTs. Route53 applies a batch
//! atomically and refuses a DELETE whose value does not match, so the batch of a leader
//! whose epoch is stale fails as a whole ([`Route53Error::Rejected`]) and changes nothing.
//! The TXT record is created on first use (a batch without DELETE, whose CREATE fails if
//! someone else created it meanwhile).
//!
//! Credentials: static ones from the config (an emulator), otherwise the default AWS chain
//! (IRSA web identity on EKS). HTTPS goes through rustls with ring, like the rest of the
//! agent.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_route53::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ChangeStatus, HealthCheckConfig, HealthCheckType,
    ResourceRecord, ResourceRecordSet, RrType,
};
use serde::Serialize;

use crate::config::Route53Config;

/// A record naming a group's writable member, as a decision sets it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct WriterRecord {
    /// The group whose writer it names.
    pub group: String,
    /// Record name.
    pub name: String,
    /// `A`, `AAAA` or `CNAME`.
    pub record_type: String,
    /// TTL in seconds.
    pub ttl: u32,
    /// The promoted member's address.
    pub value: String,
}

/// Why a Route53 call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Route53Error {
    /// Route53 refused the batch (`InvalidChangeBatch`): the epoch record did not hold the
    /// value this leader expected, so another leader (or a person) changed it. Not retried.
    #[error("batch rejected ({code}): {message}")]
    Rejected {
        /// The error code.
        code: String,
        /// Route53's message.
        message: String,
    },
    /// Throttled or another change still pending (`Throttling`,
    /// `PriorRequestNotComplete`): worth retrying after a pause.
    #[error("throttled ({code}): {message}")]
    Throttled {
        /// The error code.
        code: String,
        /// Route53's message.
        message: String,
    },
    /// Any other failure (network, credentials, a missing zone).
    #[error("{0}")]
    Other(String),
    /// The change was applied but did not reach INSYNC in time.
    #[error("change {change} not INSYNC after {}", humantime::format_duration(*.waited))]
    NotInSync {
        /// The change id.
        change: String,
        /// How long it was waited for.
        waited: Duration,
    },
    /// The credentials in the config could not be read.
    #[error("route53.credentials: {0}")]
    Credentials(String),
}

impl Route53Error {
    /// Whether trying again may help.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            Route53Error::Throttled { .. } | Route53Error::Other(_)
        )
    }
}

fn classify<E, R>(e: aws_sdk_route53::error::SdkError<E, R>) -> Route53Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let code = e.code().unwrap_or_default().to_owned();
    let message = e.message().unwrap_or_default().to_owned();
    match code.as_str() {
        "InvalidChangeBatch" => Route53Error::Rejected { code, message },
        "Throttling" | "ThrottlingException" | "PriorRequestNotComplete" => {
            Route53Error::Throttled { code, message }
        }
        _ => Route53Error::Other(DisplayErrorContext(&e).to_string()),
    }
}

/// What the weighted records and the epoch record hold now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DnsView {
    /// Weight per region, for the regions whose record exists.
    pub weights: BTreeMap<String, u32>,
    /// The epoch in the TXT record, if it exists and holds a number.
    pub epoch: Option<u64>,
    /// Each region's record set as it is, so that a change keeps what failoverd does not
    /// own (a health check, an alias target, the values).
    pub sets: BTreeMap<String, ResourceRecordSet>,
}

/// A Route53 client for the configured records.
#[derive(Clone)]
pub struct Route53 {
    client: aws_sdk_route53::Client,
    zone_id: String,
    record_name: String,
    record_type: RrType,
    ttl: i64,
    epoch_record: String,
    /// region → (set identifier, value)
    records: BTreeMap<String, (String, String)>,
    /// region → gate URL
    gates: BTreeMap<String, String>,
    insync_timeout: Duration,
}

/// A name as Route53 lists it: lower case with a trailing dot.
fn canonical(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with('.') {
        lower
    } else {
        format!("{lower}.")
    }
}

fn epoch_value(epoch: u64) -> String {
    format!("\"{epoch}\"")
}

fn built(e: aws_sdk_route53::error::BuildError) -> Route53Error {
    Route53Error::Other(e.to_string())
}

/// A record set with one value (and a set identifier, for a weighted record).
fn record_set(
    name: &str,
    kind: RrType,
    ttl: i64,
    value: &str,
    set_identifier: Option<&str>,
) -> Result<ResourceRecordSet, Route53Error> {
    ResourceRecordSet::builder()
        .name(name)
        .r#type(kind)
        .ttl(ttl)
        .set_set_identifier(set_identifier.map(str::to_owned))
        .resource_records(
            ResourceRecord::builder()
                .value(value)
                .build()
                .map_err(built)?,
        )
        .build()
        .map_err(built)
}

fn change(action: ChangeAction, set: ResourceRecordSet) -> Result<Change, Route53Error> {
    Change::builder()
        .action(action)
        .resource_record_set(set)
        .build()
        .map_err(built)
}

impl Route53 {
    /// A client for `config`, with `request_timeout` on every call.
    pub async fn new(
        config: &Route53Config,
        request_timeout: Duration,
    ) -> Result<Route53, Route53Error> {
        use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http)
            .region(aws_config::Region::new(config.signing_region.clone()))
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_attempt_timeout(request_timeout)
                    .connect_timeout(request_timeout.min(Duration::from_secs(3)))
                    .build(),
            );
        if let Some(c) = &config.credentials {
            let id = c
                .access_key_id
                .load()
                .map_err(|e| Route53Error::Credentials(e.to_string()))?;
            let secret = c
                .secret_access_key
                .load()
                .map_err(|e| Route53Error::Credentials(e.to_string()))?;
            loader = loader.credentials_provider(aws_credential_types::Credentials::new(
                id.expose(),
                secret.expose(),
                None,
                None,
                "failoverd-config",
            ));
        }
        if let Some(url) = &config.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let sdk = loader.load().await;
        Ok(Route53 {
            client: aws_sdk_route53::Client::new(&sdk),
            zone_id: config.zone_id.clone(),
            record_name: canonical(&config.record_name),
            record_type: RrType::from(config.record_type.as_str()),
            ttl: i64::from(config.ttl),
            epoch_record: canonical(&config.epoch_record()),
            records: config
                .regions
                .iter()
                .map(|(region, r)| (region.clone(), (r.set_identifier.clone(), r.value.clone())))
                .collect(),
            insync_timeout: config.insync_timeout(),
            gates: config
                .regions
                .iter()
                .filter_map(|(region, r)| Some((region.clone(), r.gate_url.clone()?)))
                .collect(),
        })
    }

    async fn list(&self, name: &str, kind: RrType) -> Result<Vec<ResourceRecordSet>, Route53Error> {
        let mut found = Vec::new();
        let mut start_identifier: Option<String> = None;
        loop {
            let page = self
                .client
                .list_resource_record_sets()
                .hosted_zone_id(&self.zone_id)
                .start_record_name(name)
                .start_record_type(kind.clone())
                .set_start_record_identifier(start_identifier.clone())
                .send()
                .await
                .map_err(classify)?;
            let mut past = false;
            for set in page.resource_record_sets() {
                if canonical(set.name()) == name && *set.r#type() == kind {
                    found.push(set.clone());
                } else {
                    // The listing starts at the name and runs on through the zone.
                    past = true;
                }
            }
            match (past, page.is_truncated(), page.next_record_identifier()) {
                (false, true, Some(next))
                    if page.next_record_name().map(canonical).as_deref() == Some(name) =>
                {
                    start_identifier = Some(next.to_owned());
                }
                _ => return Ok(found),
            }
        }
    }

    /// Reads the weighted records and the epoch record.
    pub async fn view(&self) -> Result<DnsView, Route53Error> {
        let sets = self
            .list(&self.record_name, self.record_type.clone())
            .await?;
        let mut weights = BTreeMap::new();
        let mut by_region = BTreeMap::new();
        for (region, (set_id, _)) in &self.records {
            if let Some(set) = sets
                .iter()
                .find(|s| s.set_identifier() == Some(set_id.as_str()))
            {
                let weight = set.weight().unwrap_or(0);
                weights.insert(region.clone(), u32::try_from(weight).unwrap_or(0));
                by_region.insert(region.clone(), set.clone());
            }
        }
        let epoch = self
            .list(&self.epoch_record, RrType::Txt)
            .await?
            .first()
            .and_then(|s| s.resource_records().first())
            .and_then(|r| r.value().trim_matches('"').parse().ok());
        Ok(DnsView {
            weights,
            epoch,
            sets: by_region,
        })
    }

    fn epoch_set(&self, epoch: u64) -> Result<ResourceRecordSet, Route53Error> {
        record_set(
            &self.epoch_record,
            RrType::Txt,
            60,
            &epoch_value(epoch),
            None,
        )
    }

    /// Sends one batch: DELETE the epoch record holding `from` (none on first use), CREATE it
    /// with `to`, UPSERT each region's weight in `weights` — on a copy of the record set in
    /// `current` when it exists, so that only the weight changes — and UPSERT the writer
    /// records. Returns the change id.
    pub async fn change(
        &self,
        from: Option<u64>,
        to: u64,
        weights: &BTreeMap<String, u32>,
        writers: &[WriterRecord],
        current: &DnsView,
    ) -> Result<String, Route53Error> {
        let mut changes = Vec::new();
        if let Some(from) = from {
            changes.push(change(ChangeAction::Delete, self.epoch_set(from)?)?);
        }
        changes.push(change(ChangeAction::Create, self.epoch_set(to)?)?);
        for (region, weight) in weights {
            let Some((set_id, value)) = self.records.get(region) else {
                return Err(Route53Error::Other(format!(
                    "region {region} has no weighted record in route53.regions"
                )));
            };
            let set = match current.sets.get(region) {
                Some(existing) => {
                    let mut set = existing.clone();
                    set.weight = Some(i64::from(*weight));
                    set
                }
                None => {
                    let mut set = record_set(
                        &self.record_name,
                        self.record_type.clone(),
                        self.ttl,
                        value,
                        Some(set_id),
                    )?;
                    set.weight = Some(i64::from(*weight));
                    set
                }
            };
            changes.push(change(ChangeAction::Upsert, set)?);
        }
        for writer in writers {
            let set = record_set(
                &canonical(&writer.name),
                RrType::from(writer.record_type.as_str()),
                i64::from(writer.ttl),
                &writer.value,
                None,
            )?;
            changes.push(change(ChangeAction::Upsert, set)?);
        }
        self.send(format!("failoverd epoch {to}"), changes).await
    }

    /// Sends `changes` as one batch; returns the change id.
    async fn send(&self, comment: String, changes: Vec<Change>) -> Result<String, Route53Error> {
        let batch = ChangeBatch::builder()
            .comment(comment)
            .set_changes(Some(changes))
            .build()
            .map_err(built)?;
        let out = self
            .client
            .change_resource_record_sets()
            .hosted_zone_id(&self.zone_id)
            .change_batch(batch)
            .send()
            .await
            .map_err(classify)?;
        Ok(out
            .change_info()
            .map(|c| c.id().to_owned())
            .unwrap_or_default())
    }

    /// Polls the change until INSYNC, within `route53.insync_timeout`; returns how long it took.
    pub async fn wait_insync(&self, change: &str) -> Result<Duration, Route53Error> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(100);
        loop {
            let status = self
                .client
                .get_change()
                .id(change)
                .send()
                .await
                .map_err(classify)?
                .change_info()
                .map(|c| c.status().clone());
            if status == Some(ChangeStatus::Insync) {
                return Ok(start.elapsed());
            }
            if start.elapsed() + pause > self.insync_timeout {
                return Err(Route53Error::NotInSync {
                    change: change.to_owned(),
                    waited: start.elapsed(),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }
}

/// One region's gate health check: what exists and what `apply` would do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GatePlan {
    /// The region.
    pub region: String,
    /// The gate the health check probes.
    pub gate_url: String,
    /// The health check's id, when it exists.
    pub health_check: Option<String>,
    /// Whether the region's weighted record carries it.
    pub attached: bool,
    /// What is missing: `create health check`, `attach to record`; empty when done.
    pub to_do: Vec<String>,
}

/// The caller reference that names a region's gate health check (Route53 makes creation
/// idempotent on it): the region and a hash of the URL, so a new URL gets a new check.
fn caller_reference(region: &str, url: &str) -> String {
    let hash = crate::util::fnv1a(url);
    format!("failoverd-gate-{region}-{hash:016x}")
}

fn health_check_config(url: &str) -> Result<HealthCheckConfig, Route53Error> {
    let parsed = url::Url::parse(url).map_err(|e| Route53Error::Other(format!("{url}: {e}")))?;
    let https = parsed.scheme() == "https";
    let host = parsed
        .host_str()
        .ok_or_else(|| Route53Error::Other(format!("{url}: no host")))?;
    let mut config = HealthCheckConfig::builder()
        .r#type(if https {
            HealthCheckType::Https
        } else {
            HealthCheckType::Http
        })
        .port(i32::from(
            parsed
                .port_or_known_default()
                .unwrap_or(if https { 443 } else { 80 }),
        ))
        .resource_path(parsed.path())
        .request_interval(10)
        .failure_threshold(2);
    config = if host.parse::<std::net::IpAddr>().is_ok() {
        config.ip_address(host)
    } else {
        config.fully_qualified_domain_name(host)
    };
    config
        .build()
        .map_err(|e| Route53Error::Other(e.to_string()))
}

impl Route53 {
    /// What exists of the gate health checks, and what is missing.
    pub async fn gate_plan(&self) -> Result<Vec<GatePlan>, Route53Error> {
        let mut checks = BTreeMap::new();
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .client
                .list_health_checks()
                .set_marker(marker.clone())
                .send()
                .await
                .map_err(classify)?;
            for check in page.health_checks() {
                checks.insert(check.caller_reference().to_owned(), check.id().to_owned());
            }
            match page.next_marker() {
                Some(next) if page.is_truncated() => marker = Some(next.to_owned()),
                _ => break,
            }
        }
        let view = self.view().await?;
        let mut plans = Vec::new();
        for (region, url) in &self.gates {
            let id = checks.get(&caller_reference(region, url)).cloned();
            let attached = match (&id, view.sets.get(region)) {
                (Some(id), Some(set)) => set.health_check_id() == Some(id.as_str()),
                _ => false,
            };
            let mut to_do = Vec::new();
            if id.is_none() {
                to_do.push("create health check".to_owned());
            }
            if !attached {
                to_do.push("attach to record".to_owned());
            }
            plans.push(GatePlan {
                region: region.clone(),
                gate_url: url.clone(),
                health_check: id,
                attached,
                to_do,
            });
        }
        Ok(plans)
    }

    /// Creates the missing gate health checks and attaches each to its region's weighted
    /// record (a copy of the record with only the health check changed). Idempotent.
    /// Returns the plan as it stands afterwards.
    pub async fn gate_apply(&self) -> Result<Vec<GatePlan>, Route53Error> {
        let plans = self.gate_plan().await?;
        let view = self.view().await?;
        let mut changes = Vec::new();
        for plan in &plans {
            let id = match &plan.health_check {
                Some(id) => id.clone(),
                None => self
                    .client
                    .create_health_check()
                    .caller_reference(caller_reference(&plan.region, &plan.gate_url))
                    .health_check_config(health_check_config(&plan.gate_url)?)
                    .send()
                    .await
                    .map_err(classify)?
                    .health_check()
                    .map(|h| h.id().to_owned())
                    .ok_or_else(|| Route53Error::Other("no health check id".into()))?,
            };
            if plan.attached {
                continue;
            }
            let Some(existing) = view.sets.get(&plan.region) else {
                return Err(Route53Error::Other(format!(
                    "region {} has no weighted record yet: nothing to attach the check to",
                    plan.region
                )));
            };
            let mut set = existing.clone();
            set.health_check_id = Some(id);
            changes.push(change(ChangeAction::Upsert, set)?);
        }
        if !changes.is_empty() {
            let id = self
                .send("failoverd: attach the gate health checks".into(), changes)
                .await?;
            self.wait_insync(&id).await?;
        }
        self.gate_plan().await
    }
}
