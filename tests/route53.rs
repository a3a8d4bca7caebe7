//! The Route53 action against the ministack emulator: weights and the epoch record change in
//! one batch, and a batch from a stale epoch is refused as a whole.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use failoverd::actions::route53::{Route53, Route53Error};
use failoverd::config::Config;
use support::{ConfigFile, Ministack, Region, Route53Section};

/// An agent in the three test regions whose `[route53]` section is `route53`.
fn config(route53: Route53Section) -> ConfigFile {
    ConfigFile {
        admin_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        data_dir: Some("/tmp/unused".into()),
        regions: support::REGIONS.map(Region::new).to_vec(),
        route53: Some(route53),
        ..ConfigFile::new("a", "eu-west-3")
    }
}

async fn route53(ministack: &Ministack) -> anyhow::Result<Route53> {
    let toml = config(ministack.route53()).render();
    let config = Config::from_str_with_env(&toml, config::FileFormat::Toml, Vec::new())?;
    let r53 = config.route53.as_ref().expect("a route53 section");
    Ok(Route53::new(r53, Duration::from_secs(5)).await?)
}

fn weights(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
    pairs.iter().map(|(r, w)| (r.to_string(), *w)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_move_with_the_epoch_and_a_stale_batch_changes_nothing() -> anyhow::Result<()> {
    let ministack = Ministack::start().await?;
    let r53 = route53(&ministack).await?;
    assert_eq!(r53.view().await?.epoch, None, "no epoch record yet");

    // First use: the epoch record is created with the weights.
    let all = weights(&[("eu-west-3", 100), ("eu-central-1", 100), ("us-east-1", 50)]);
    let change = r53.change(None, 3, &all, &[], &r53.view().await?).await?;
    r53.wait_insync(&change).await?;
    let view = r53.view().await?;
    assert_eq!(view.epoch, Some(3));
    assert_eq!(view.weights, all);

    // The next epoch drains one region: only that weight moves.
    let change = r53
        .change(Some(3), 9, &weights(&[("eu-west-3", 0)]), &[], &view)
        .await?;
    r53.wait_insync(&change).await?;
    let view = r53.view().await?;
    assert_eq!(view.epoch, Some(9));
    assert_eq!(view.weights["eu-west-3"], 0);
    assert_eq!(view.weights["eu-central-1"], 100);

    // A leader still at epoch 3 tries to drain another region: refused, nothing changes.
    let stale = r53
        .change(Some(3), 10, &weights(&[("eu-central-1", 0)]), &[], &view)
        .await
        .expect_err("a stale epoch must be refused");
    assert!(
        matches!(&stale, Route53Error::Rejected { code, .. } if code == "InvalidChangeBatch"),
        "{stale:?}"
    );
    assert!(!stale.retryable(), "a rejected batch is not retried");
    let after = r53.view().await?;
    assert_eq!(after, view, "the whole batch was refused");

    // Creating the epoch record again (a second cluster's first use) is refused too.
    let twice = r53
        .change(None, 11, &weights(&[("us-east-1", 0)]), &[], &view)
        .await
        .expect_err("the epoch record exists");
    assert!(matches!(twice, Route53Error::Rejected { .. }), "{twice:?}");
    assert_eq!(r53.view().await?, view);
    let (_, epochs) = ministack.records().await?;
    assert_eq!(epochs, ["\"9\""], "one epoch record, the last good one");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_is_a_retryable_error_that_names_the_cause() -> anyhow::Result<()> {
    let ministack = Ministack::start().await?;
    let dead = format!("http://127.0.0.1:{}", support::free_port());
    let toml = config(Route53Section {
        endpoint_url: Some(dead),
        ..ministack.route53()
    })
    .render();
    let config = Config::from_str_with_env(&toml, config::FileFormat::Toml, Vec::new())?;
    let r53 = Route53::new(config.route53.as_ref().unwrap(), Duration::from_secs(2)).await?;
    let error = r53.view().await.expect_err("nothing listens there");
    assert!(error.retryable(), "{error:?}");
    assert!(
        error.to_string().to_lowercase().contains("connect"),
        "{error}"
    );
    Ok(())
}

/// The config text with a gate URL on every region's record.
fn with_gates(ministack: &Ministack) -> String {
    let mut section = ministack.route53();
    for (i, record) in section.regions.iter_mut().enumerate() {
        record.gate_url = Some(format!(
            "http://127.0.0.1:{}/v1/gate/{}",
            9000 + i,
            record.region
        ));
    }
    config(section).render()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_health_checks_are_created_and_attached_once() -> anyhow::Result<()> {
    let ministack = Ministack::start().await?;
    let text = with_gates(&ministack);
    let config = Config::from_str_with_env(&text, config::FileFormat::Toml, Vec::new())?;
    let r53 = Route53::new(config.route53.as_ref().unwrap(), Duration::from_secs(5)).await?;
    let all = weights(&[("eu-west-3", 100), ("eu-central-1", 100), ("us-east-1", 50)]);
    let change = r53.change(None, 1, &all, &[], &r53.view().await?).await?;
    r53.wait_insync(&change).await?;

    let plan = r53.gate_plan().await?;
    assert_eq!(plan.len(), 3);
    assert!(plan
        .iter()
        .all(|p| p.to_do == ["create health check", "attach to record"]));
    let applied = r53.gate_apply().await?;
    assert!(
        applied.iter().all(|p| p.to_do.is_empty() && p.attached),
        "{applied:?}"
    );

    // A second run changes nothing: the same checks, no new ones, weights as they were.
    let client = ministack.client().await;
    let checks = client
        .list_health_checks()
        .send()
        .await?
        .health_checks()
        .len();
    assert_eq!(checks, 3);
    let again = r53.gate_apply().await?;
    assert_eq!(again, applied);
    assert_eq!(
        client
            .list_health_checks()
            .send()
            .await?
            .health_checks()
            .len(),
        3
    );
    let view = r53.view().await?;
    assert_eq!(view.weights, all);
    assert_eq!(
        view.epoch,
        Some(1),
        "attaching does not touch the epoch record"
    );
    for p in &applied {
        let id = view.sets[&p.region].health_check_id();
        assert_eq!(id, p.health_check.as_deref());
    }
    // A weight change keeps the health check on the record.
    let change = r53
        .change(Some(1), 2, &weights(&[("us-east-1", 0)]), &[], &view)
        .await?;
    r53.wait_insync(&change).await?;
    let after = r53.view().await?;
    assert_eq!(
        after.sets["us-east-1"].health_check_id(),
        view.sets["us-east-1"].health_check_id()
    );

    // The command line says the same.
    let file = tempfile::Builder::new().suffix(".toml").tempfile()?;
    std::fs::write(file.path(), &text)?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_failoverd"))
        .args(["route53", "plan", "--config"])
        .arg(file.path())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("every gate health check exists and is attached"),
        "{stdout}"
    );
    Ok(())
}
