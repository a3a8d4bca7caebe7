//! The metrics' series and their text exposition.
use super::*;
use crate::config::ProbeSettings;
use crate::probe::HttpFacts;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec};
use std::time::Duration;

fn target(name: &str, region: &str) -> Target {
    let settings = ProbeSettings {
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        rise: 1,
        fall: 1,
        fast_interval: Duration::from_millis(250),
    };
    Target::http_for_tests(name, region, settings)
}

fn ok() -> Result<Observation, ProbeError> {
    Ok(Observation {
        latency: Duration::ZERO,
        facts: Facts::Http(HttpFacts {
            status: 200,
            body_bytes: 0,
        }),
    })
}

/// The same observations recorded through the prometheus crate's own types, rendered by
/// its encoder: what the series must read like.
struct Reference {
    registry: Registry,
    duration: HistogramVec,
    success: IntGaugeVec,
    probes: IntCounterVec,
    state: IntGaugeVec,
    transitions: IntCounterVec,
}

impl Reference {
    fn new() -> Reference {
        let registry = Registry::new();
        let t = &["target", "kind", "region"];
        let opts = |i: usize| Opts::new(FAMILIES[i].0, FAMILIES[i].2);
        let duration = HistogramVec::new(
            HistogramOpts::new(FAMILIES[0].0, FAMILIES[0].2)
                .buckets(PROBE_DURATION_BUCKETS.to_vec()),
            t,
        )
        .unwrap();
        let success = IntGaugeVec::new(opts(1), t).unwrap();
        let probes = IntCounterVec::new(opts(2), &["target", "kind", "region", "result"]).unwrap();
        let state = IntGaugeVec::new(opts(3), &["target", "kind", "region", "state"]).unwrap();
        let transitions = IntCounterVec::new(opts(4), &["target", "kind", "region", "to"]).unwrap();
        for c in [
            Box::new(duration.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(success.clone()),
            Box::new(probes.clone()),
            Box::new(state.clone()),
            Box::new(transitions.clone()),
        ] {
            registry.register(c).unwrap();
        }
        Reference {
            registry,
            duration,
            success,
            probes,
            state,
            transitions,
        }
    }

    fn add(&self, t: &Target) {
        let (id, kind, region) = (t.id.as_str(), t.kind().as_str(), t.region.as_str());
        self.duration.with_label_values(&[id, kind, region]);
        self.success.with_label_values(&[id, kind, region]);
        for r in RESULTS {
            self.probes.with_label_values(&[id, kind, region, r]);
        }
        for s in State::ALL {
            self.state
                .with_label_values(&[id, kind, region, s.as_str()])
                .set(i64::from(s == State::Unknown));
            self.transitions
                .with_label_values(&[id, kind, region, s.as_str()]);
        }
    }

    fn observe(&self, t: &Target, result: &str, seconds: f64) {
        let (id, kind, region) = (t.id.as_str(), t.kind().as_str(), t.region.as_str());
        self.duration
            .with_label_values(&[id, kind, region])
            .observe(seconds);
        self.success
            .with_label_values(&[id, kind, region])
            .set(i64::from(result == "ok"));
        self.probes
            .with_label_values(&[id, kind, region, result])
            .inc();
    }

    fn transition(&self, t: &Target, from: State, to: State) {
        let (id, kind, region) = (t.id.as_str(), t.kind().as_str(), t.region.as_str());
        self.state
            .with_label_values(&[id, kind, region, from.as_str()])
            .set(0);
        self.state
            .with_label_values(&[id, kind, region, to.as_str()])
            .set(1);
        self.transitions
            .with_label_values(&[id, kind, region, to.as_str()])
            .inc();
    }
}

fn lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

#[test]
fn the_series_read_as_the_prometheus_encoder_writes_them() {
    let reference = Reference::new();
    let metrics = ProbeMetrics::new(&Registry::new()).unwrap();
    let a = target("orders", "eu-west-3");
    // A label value that needs escaping.
    let b = target("we\"ird\\name", "us-east-1");
    let mut ma = metrics.target(&a);
    let mut mb = metrics.target(&b);
    reference.add(&a);
    reference.add(&b);
    for (seconds, result) in [
        (0.0004, "ok"),
        (0.003, "ok"),
        (0.7, "error"),
        (12.0, "timeout"),
    ] {
        let outcome = match result {
            "ok" => ok(),
            "error" => Err(ProbeError::Connect("refused".into())),
            _ => Err(ProbeError::Timeout(Duration::from_secs(12))),
        };
        ma.observe(&outcome, seconds);
        reference.observe(&a, result, seconds);
    }
    mb.observe(&ok(), 0.01);
    reference.observe(&b, "ok", 0.01);
    let up = Transition {
        from: State::Unknown,
        to: State::Up,
    };
    ma.transition(up);
    reference.transition(&a, up.from, up.to);
    let down = Transition {
        from: State::Up,
        to: State::Down,
    };
    ma.transition(down);
    reference.transition(&a, down.from, down.to);

    let ours = render_all(&Registry::new(), &metrics.series());
    let theirs = render(&reference.registry);
    assert_eq!(lines(&ours), lines(&theirs));
    assert!(ours.contains(r#"failoverd_target_state{kind="http",region="eu-west-3",state="down",target="http/eu-west-3/orders"} 1"#));
}

#[test]
fn a_large_exposition_comes_in_chunks_each_family_whole() {
    let metrics = ProbeMetrics::new(&Registry::new()).unwrap();
    let targets: Vec<Target> = (0..500)
        .map(|i| target(&format!("api-{i}"), "eu-west-3"))
        .collect();
    let _kept: Vec<TargetMetrics> = targets.iter().map(|t| metrics.target(t)).collect();
    let mut body = Exposition::new(&Registry::new(), &metrics.series());
    let mut chunks = Vec::new();
    while let Some(chunk) = body.chunk() {
        assert!(chunk.len() < CHUNK + 4096, "chunk of {} bytes", chunk.len());
        chunks.push(String::from_utf8(chunk.to_vec()).unwrap());
    }
    assert!(chunks.len() > 10, "{} chunks", chunks.len());
    let text = chunks.concat();
    // 26 samples per target, and each family's header once, before its samples.
    let samples = text.lines().filter(|l| !l.starts_with('#')).count();
    assert_eq!(samples, 500 * 26);
    for (name, kind, _) in FAMILIES {
        let header = format!("# TYPE {name} {kind}\n");
        assert_eq!(text.matches(&header).count(), 1, "{name}");
        let at = text.find(&header).unwrap();
        let first = text.find(&format!("\n{name}")).unwrap();
        assert!(at < first, "{name}: samples before the header");
    }
    assert!(render_all(
        &Registry::new(),
        &ProbeMetrics::new(&Registry::new()).unwrap().series()
    )
    .is_empty());
}
