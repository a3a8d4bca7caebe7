//! The Route53 emulator: `ministack` on a free loopback port with the test zone, a Route53
//! client on it to set up and read records, and the `[route53]` section that points the
//! agents at it. Owns the emulator process and its files; the agents are started elsewhere.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use failoverd::config::SecretRef;

use super::agent::REGIONS;
use super::config::{Route53Region, Route53Section};
use super::process::{free_port, stop_child};
use super::wait::wait_for_async;

/// The `ministack` Route53 emulator on a free loopback port, with a hosted zone.
///
/// The binary comes from `MINISTACK` (set by `scripts/test.sh`, which installs it into a
/// virtualenv on first use), else from that virtualenv's default place.
pub struct Ministack {
    /// Its port.
    pub port: u16,
    /// The hosted zone created at start (bare id).
    pub zone_id: String,
    /// Files with the static credentials the agents read.
    pub access_key_file: PathBuf,
    /// See `access_key_file`.
    pub secret_key_file: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

/// The zone every Route53 test uses.
pub const ZONE: &str = "example.test.";
/// The weighted record's name.
pub const RECORD: &str = "api.example.test.";

impl Ministack {
    /// Starts it, waits until it answers, creates the zone [`ZONE`].
    pub async fn start() -> anyhow::Result<Ministack> {
        let bin = std::env::var("MINISTACK").unwrap_or_else(|_| {
            let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
            format!("{home}/.cache/failoverd/ministack-1.5.33/bin/ministack")
        });
        anyhow::ensure!(
            Path::new(&bin).exists(),
            "ministack not found at {bin}: run scripts/ministack-venv.sh (scripts/test.sh does)"
        );
        let dir = tempfile::Builder::new()
            .prefix("failoverd-ministack-")
            .tempdir()?;
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("ministack.log"))?;
        let child = Command::new(&bin)
            .env("GATEWAY_PORT", port.to_string())
            .env("BIND_HOST", "127.0.0.1")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {bin}"))?;
        let access_key_file = dir.path().join("aws-access-key-id");
        let secret_key_file = dir.path().join("aws-secret-access-key");
        std::fs::write(&access_key_file, "test\n")?;
        std::fs::write(&secret_key_file, "test\n")?;
        let mut ministack = Ministack {
            port,
            zone_id: String::new(),
            access_key_file,
            secret_key_file,
            child: Some(child),
            _dir: dir,
        };
        let health = format!("{}/_ministack/health", ministack.url());
        wait_for_async("ministack to answer", Duration::from_secs(30), || async {
            let answer = reqwest::get(&health).await.ok()?;
            answer.status().is_success().then_some(())
        })
        .await?;
        let zone = ministack
            .client()
            .await
            .create_hosted_zone()
            .name(ZONE)
            .caller_reference(format!("failoverd-test-{}", rand::random::<u64>()))
            .send()
            .await
            .context("create the hosted zone")?;
        ministack.zone_id = zone
            .hosted_zone()
            .map(|z| z.id().trim_start_matches("/hostedzone/").to_owned())
            .context("no zone id")?;
        Ok(ministack)
    }

    /// Its endpoint URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A Route53 client on it, for setting up and checking records from the test.
    pub async fn client(&self) -> aws_sdk_route53::Client {
        let creds = aws_credential_types::Credentials::new("test", "test", None, None, "test");
        let config = aws_sdk_route53::Config::builder()
            .behavior_version(aws_sdk_route53::config::BehaviorVersion::latest())
            .region(aws_sdk_route53::config::Region::new("us-east-1"))
            .credentials_provider(creds)
            .endpoint_url(self.url())
            .http_client(
                aws_smithy_http_client::Builder::new()
                    .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                        aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                    ))
                    .build_https(),
            )
            .build();
        aws_sdk_route53::Client::from_conf(config)
    }

    /// Sends one change batch to the emulator, as a person or another tool would.
    pub async fn send_changes(
        &self,
        changes: Vec<aws_sdk_route53::types::Change>,
    ) -> anyhow::Result<()> {
        self.client()
            .await
            .change_resource_record_sets()
            .hosted_zone_id(&self.zone_id)
            .change_batch(
                aws_sdk_route53::types::ChangeBatch::builder()
                    .set_changes(Some(changes))
                    .build()?,
            )
            .send()
            .await?;
        Ok(())
    }

    /// The weighted records (weight 100 each) as an operator set them up before failoverd
    /// took over.
    pub async fn seed_weights(&self) -> anyhow::Result<()> {
        use aws_sdk_route53::types::{Change, ChangeAction};
        let mut changes = Vec::new();
        for region in REGIONS {
            changes.push(
                Change::builder()
                    .action(ChangeAction::Upsert)
                    .resource_record_set(weighted(region, 100)?)
                    .build()?,
            );
        }
        self.send_changes(changes).await
    }

    /// The `[route53]` section for the three test regions, record values `192.0.2.{1,2,3}`.
    pub fn route53(&self) -> Route53Section {
        Route53Section {
            zone_id: self.zone_id.clone(),
            record_name: RECORD.into(),
            record_type: Some("A".into()),
            ttl: Some(30),
            endpoint_url: Some(self.url()),
            credentials: Some((
                SecretRef::File(self.access_key_file.clone()),
                SecretRef::File(self.secret_key_file.clone()),
            )),
            insync_timeout: Some(Duration::from_secs(10)),
            regions: REGIONS
                .iter()
                .enumerate()
                .map(|(i, region)| Route53Region {
                    region: region.to_string(),
                    set_identifier: region.to_string(),
                    value: format!("192.0.2.{}", i + 1),
                    gate_url: None,
                })
                .collect(),
            writers: Vec::new(),
        }
    }

    /// Every record set of the zone (one page holds all a test makes).
    async fn sets(&self) -> anyhow::Result<Vec<aws_sdk_route53::types::ResourceRecordSet>> {
        let listing = self
            .client()
            .await
            .list_resource_record_sets()
            .hosted_zone_id(&self.zone_id)
            .send()
            .await?;
        Ok(listing.resource_record_sets().to_vec())
    }

    /// The weighted records' weights by set identifier, and the epoch TXT values.
    pub async fn records(&self) -> anyhow::Result<(BTreeMap<String, i64>, Vec<String>)> {
        let mut weights = BTreeMap::new();
        let mut epochs = Vec::new();
        for set in self.sets().await? {
            if set.name() == RECORD {
                if let (Some(id), Some(w)) = (set.set_identifier(), set.weight()) {
                    weights.insert(id.to_owned(), w);
                }
            } else if set.name() == format!("_failoverd-epoch.{RECORD}") {
                epochs.extend(set.resource_records().iter().map(|r| r.value().to_owned()));
            }
        }
        Ok((weights, epochs))
    }

    /// The values of the (non-weighted) record `name`, if it exists.
    pub async fn values(&self, name: &str) -> anyhow::Result<Option<Vec<String>>> {
        Ok(self
            .sets()
            .await?
            .iter()
            .find(|s| s.name() == name && s.set_identifier().is_none())
            .map(|s| {
                s.resource_records()
                    .iter()
                    .map(|r| r.value().to_owned())
                    .collect()
            }))
    }
}

impl Drop for Ministack {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// The weighted record of test region `region` with `weight` (value `192.0.2.<n>`).
pub fn weighted(
    region: &str,
    weight: i64,
) -> anyhow::Result<aws_sdk_route53::types::ResourceRecordSet> {
    use aws_sdk_route53::types::{ResourceRecord, ResourceRecordSet, RrType};
    let index = REGIONS
        .iter()
        .position(|r| *r == region)
        .context("a test region")?;
    Ok(ResourceRecordSet::builder()
        .name(RECORD)
        .r#type(RrType::A)
        .set_identifier(region)
        .weight(weight)
        .ttl(30)
        .resource_records(
            ResourceRecord::builder()
                .value(format!("192.0.2.{}", index + 1))
                .build()?,
        )
        .build()?)
}
