//! Shared test harness: real Postgres, Redis and HTTP servers on free loopback ports, the
//! Route53 emulator, and agents in this process or as a cluster of `failoverd` processes.
//! Every server is stopped by PID when its handle drops, even when the test fails, and its
//! files live in a temporary directory removed with it.
//!
//! One file per concern: `wait` (polling with a deadline), `process` (ports, child processes,
//! `failoverd run`), `postgres`, `redis`, `http` (HTTP servers, certificates, fault proxies),
//! `ministack`, `agent` (agents under test), `lab` (three agents with the datastores a test
//! asks for), `config` (agent configurations, typed) and `toml` (writing them). Tests use
//! what is re-exported here.
#![allow(dead_code)] // each test binary uses a different part of the harness

mod agent;
mod config;
mod http;
mod lab;
mod ministack;
mod postgres;
mod process;
mod redis;
mod toml;
mod wait;

// Each test binary uses a different part of the harness: neither an unused item nor an
// unused re-export is a mistake here.
#[allow(unused_imports)]
pub use self::{
    agent::{api_router, region_apis, AgentCluster, ClusterOptions, TestAgent, REGIONS},
    config::{
        probe_settings, ClusterSection, ConfigFile, FailoverSection, HttpTarget, Peer,
        PostgresMember, PostgresSection, RedisMember, RedisShard, Region, Route53Region,
        Route53Section, TlsSection, WriterRecord,
    },
    http::{get_json, BlackHole, FaultProxy, HttpServer, HttpsServer, TestCerts, WebhookReceiver},
    lab::{Lab, LabOptions, PostgresLab, RedisLab, Route53Lab},
    ministack::{weighted, Ministack, RECORD, ZONE},
    postgres::{slot_name, PgPair, PgServer, MONITOR_PASSWORD, MONITOR_USER, PG_BIN},
    process::{free_port, free_port_with_bus, free_ports, AgentProcess},
    redis::{RedisCluster, RedisPair, RedisServer},
    wait::{wait_for, wait_for_async},
};
