//! The OpenAPI 3.1 document of the admin API, served at `GET /v1/openapi.json`.
//!
//! Built from the code: every request and response body's schema is derived from the Rust
//! type the handler reads or writes (with `schemars`, which follows the serde attributes), and
//! the table of operations below names those types. The document says what this agent
//! enforces: when `admin.open_reads` is on, reads carry no security requirement.

use schemars::generate::{Contract, SchemaSettings};
use schemars::SchemaGenerator;
use serde_json::{json, Map, Value};

use super::ops::{DrillBody, FailoverBody, ReasonBody, RegionBody, SwitchoverBody};
use super::roles::RoleResponse;
use super::{ErrorBody, GateResponse, HistoryResponse, Liveness, Readiness, StatusResponse};
use crate::desired::FailoverRecord;
use crate::failover::manual::Reply;

/// How a response body is described.
#[derive(Clone)]
enum Body {
    /// JSON of the schema in `#/components/schemas`.
    Json(Value),
    /// Plain text or HTML.
    Text(&'static str),
}

/// One operation of the API.
struct Operation {
    method: &'static str,
    path: &'static str,
    id: &'static str,
    summary: &'static str,
    /// Needs a token (calls that change something; reads when they are closed).
    secured: bool,
    parameters: Vec<Value>,
    request: Option<Value>,
    /// Status, description, body.
    responses: Vec<(u16, &'static str, Body)>,
}

fn path_param(name: &str, description: &str, schema: Value) -> Value {
    json!({
        "name": name,
        "in": "path",
        "required": true,
        "description": description,
        "schema": schema,
    })
}

/// The document, for an agent whose reads are open (`open_reads`) or need a token.
pub fn document(open_reads: bool) -> Value {
    // Responses: what the server writes (the serialize contract), shared in components.
    let mut responses = SchemaGenerator::new(SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "#/components/schemas".into();
        s.meta_schema = None;
    }));
    // Requests: what the server accepts (the deserialize contract: defaulted fields are
    // optional), inlined so the two contracts never share a name.
    let mut requests = SchemaGenerator::new(SchemaSettings::draft2020_12().with(|s| {
        s.contract = Contract::Deserialize;
        s.inline_subschemas = true;
        s.meta_schema = None;
    }));
    let reason = requests.root_schema_for::<ReasonBody>().to_value();
    let region_body = requests.root_schema_for::<RegionBody>().to_value();
    let failover_body = requests.root_schema_for::<FailoverBody>().to_value();
    let drill_body = requests.root_schema_for::<DrillBody>().to_value();
    let switchover_body = requests.root_schema_for::<SwitchoverBody>().to_value();

    let error = Body::Json(responses.subschema_for::<ErrorBody>().to_value());
    let err = |status: u16, what: &'static str| (status, what, error.clone());
    let reply = responses.subschema_for::<Reply>().to_value();
    let region = path_param(
        "name",
        "A configured region",
        json!({"type": "string", "minLength": 1}),
    );
    let change_errors = |not_found: Option<&'static str>| {
        let mut list = vec![
            err(
                400,
                "bad input: `bad_json`, `bad_request`, `reason_required`, …",
            ),
            err(401, "`unauthorized`: no bearer token"),
            err(403, "`forbidden`: the token is not one of `admin.tokens`"),
            err(409, "`paused` or `failover_running`"),
            err(413, "`body_too_large`"),
            err(422, "refused by a guard: `last_region`, `no_candidate`, …"),
            err(429, "`rate_limited`: see Retry-After"),
            err(503, "`no_leader`, `no_quorum` or `timeout`"),
        ];
        if let Some(what) = not_found {
            list.push(err(404, what));
        }
        list
    };
    let read_errors = |list: &mut Vec<(u16, &'static str, Body)>| {
        if !open_reads {
            list.push(err(401, "`unauthorized`: no bearer token"));
            list.push(err(
                403,
                "`forbidden`: the token is not one of `admin.tokens`",
            ));
        }
    };

    let mut operations = vec![
        Operation {
            method: "get",
            path: "/healthz",
            id: "liveness",
            summary: "Liveness: the process answers",
            secured: false,
            parameters: vec![],
            request: None,
            responses: vec![(
                200,
                "alive",
                Body::Json(responses.subschema_for::<Liveness>().to_value()),
            )],
        },
        Operation {
            method: "get",
            path: "/readyz",
            id: "readiness",
            summary: "Readiness: every target probed at least once",
            secured: false,
            parameters: vec![],
            request: None,
            responses: {
                let ready = responses.subschema_for::<Readiness>().to_value();
                vec![
                    (200, "ready", Body::Json(ready.clone())),
                    (503, "not every target probed yet", Body::Json(ready)),
                ]
            },
        },
        Operation {
            method: "get",
            path: "/v1/gate/{region}",
            id: "gate",
            summary: "Whether a region should receive traffic (for a Route53 health check)",
            secured: false,
            parameters: vec![path_param(
                "region",
                "A configured region",
                json!({"type": "string", "minLength": 1}),
            )],
            request: None,
            responses: {
                let gate = responses.subschema_for::<GateResponse>().to_value();
                vec![
                    (200, "in service", Body::Json(gate.clone())),
                    (503, "out of service, with the reasons", Body::Json(gate)),
                    err(404, "`unknown_region`"),
                ]
            },
        },
        Operation {
            method: "get",
            path: "/v1/members/{name}/{role}",
            id: "member_role",
            summary: "Whether a datastore member is the primary or a streaming replica, from this \
                      agent's view (for load balancers and poolers)",
            secured: false,
            parameters: vec![
                path_param(
                    "name",
                    "A Postgres member or Redis replication member",
                    json!({"type": "string", "minLength": 1}),
                ),
                path_param(
                    "role",
                    "The role asked about",
                    json!({"type": "string", "enum": ["primary", "replica"]}),
                ),
            ],
            request: None,
            responses: {
                let role = responses.subschema_for::<RoleResponse>().to_value();
                vec![
                    (200, "it has the role", Body::Json(role.clone())),
                    (503, "it has not, with the reasons", Body::Json(role)),
                    err(404, "`unknown_member` or `unknown_role`"),
                    err(
                        409,
                        "`ambiguous_member`: the name is a member of several groups",
                    ),
                ]
            },
        },
        Operation {
            method: "get",
            path: "/v1/openapi.json",
            id: "openapi",
            summary: "This document",
            secured: false,
            parameters: vec![],
            request: None,
            responses: vec![(200, "the document", Body::Json(json!({"type": "object"})))],
        },
        Operation {
            method: "get",
            path: "/",
            id: "status_page",
            summary: "The status page (HTML, refreshes itself)",
            secured: !open_reads,
            parameters: vec![],
            request: None,
            responses: vec![(200, "the page", Body::Text("text/html"))],
        },
        Operation {
            method: "get",
            path: "/metrics",
            id: "metrics",
            summary: "Prometheus metrics",
            secured: !open_reads,
            parameters: vec![],
            request: None,
            responses: vec![(200, "the metrics", Body::Text("text/plain"))],
        },
        Operation {
            method: "get",
            path: "/v1/status",
            id: "status",
            summary: "Targets, verdicts with every agent's vote, leader, mode, leases",
            secured: !open_reads,
            parameters: vec![],
            request: None,
            responses: vec![(
                200,
                "the status",
                Body::Json(responses.subschema_for::<StatusResponse>().to_value()),
            )],
        },
        Operation {
            method: "get",
            path: "/v1/history",
            id: "history",
            summary: "Failovers, refusals, drills and mode changes, newest first",
            secured: !open_reads,
            parameters: vec![json!({
                "name": "limit",
                "in": "query",
                "required": false,
                "description": "At most this many entries (default 50)",
                "schema": {"type": "integer", "minimum": 0, "maximum": u32::MAX},
            })],
            request: None,
            responses: vec![
                (
                    200,
                    "the history",
                    Body::Json(responses.subschema_for::<HistoryResponse>().to_value()),
                ),
                err(400, "`bad_query`"),
            ],
        },
        Operation {
            method: "get",
            path: "/v1/failovers/{id}",
            id: "failover",
            summary: "One failover (its id is its epoch) with its steps",
            secured: !open_reads,
            parameters: vec![path_param(
                "id",
                "The failover's epoch",
                json!({"type": "integer", "minimum": 0, "maximum": u64::MAX}),
            )],
            request: None,
            responses: vec![
                (
                    200,
                    "the failover",
                    Body::Json(responses.subschema_for::<FailoverRecord>().to_value()),
                ),
                err(400, "`bad_id`"),
                err(404, "`unknown_failover`"),
            ],
        },
    ];
    for (path, id, summary, body) in [
        (
            "/v1/pause",
            "pause",
            "Maintenance mode: probes go on, nothing is done automatically",
            &reason,
        ),
        (
            "/v1/resume",
            "resume",
            "Back to automatic failover",
            &reason,
        ),
        (
            "/v1/failover",
            "force_failover",
            "Forced failover of a region (dry_run: the plan only)",
            &failover_body,
        ),
        (
            "/v1/switchover",
            "switchover",
            "Planned move of a Postgres group's primary to a member (dry_run: the plan only)",
            &switchover_body,
        ),
        (
            "/v1/drills",
            "drill",
            "A readiness drill, or a live drill of one region",
            &drill_body,
        ),
    ] {
        operations.push(Operation {
            method: "post",
            path,
            id,
            summary,
            secured: true,
            parameters: vec![],
            request: Some(body.clone()),
            responses: {
                let mut list = vec![(200, "done", Body::Json(reply.clone()))];
                list.extend(change_errors(match id {
                    "force_failover" | "drill" => Some("`unknown_region`"),
                    "switchover" => Some("`unknown_member`"),
                    _ => None,
                }));
                list
            },
        });
    }
    for (path, id, summary) in [
        (
            "/v1/regions/{name}/drain",
            "drain",
            "Take a region out of DNS, moving its primaries out with no data loss",
        ),
        (
            "/v1/regions/{name}/restore",
            "restore",
            "Put a drained region back into DNS",
        ),
    ] {
        operations.push(Operation {
            method: "post",
            path,
            id,
            summary,
            secured: true,
            parameters: vec![region.clone()],
            request: Some(region_body.clone()),
            responses: {
                let mut list = vec![(200, "done", Body::Json(reply.clone()))];
                list.extend(change_errors(Some("`unknown_region`")));
                list
            },
        });
    }
    for op in operations
        .iter_mut()
        .filter(|op| op.path != "/v1/openapi.json")
    {
        if op.secured && op.method == "get" {
            read_errors(&mut op.responses);
        }
        op.responses.push(err(405, "`method_not_allowed`"));
        op.responses.sort_by_key(|(status, _, _)| *status);
        op.responses.dedup_by_key(|(status, _, _)| *status);
    }

    let mut paths = Map::new();
    for op in operations {
        let mut responses_json = Map::new();
        for (status, description, body) in op.responses {
            let content = match body {
                Body::Json(schema) => json!({"application/json": {"schema": schema}}),
                Body::Text(mime) => json!({ mime: {"schema": {"type": "string"}} }),
            };
            responses_json.insert(
                status.to_string(),
                json!({"description": description, "content": content}),
            );
        }
        let mut operation = json!({
            "operationId": op.id,
            "summary": op.summary,
            "parameters": op.parameters,
            "responses": responses_json,
            "security": if op.secured { json!([{"bearer": []}]) } else { json!([]) },
        });
        if let Some(schema) = op.request {
            operation["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": schema}},
            });
        }
        let entry = paths.entry(op.path.to_owned()).or_insert_with(|| json!({}));
        entry[op.method] = operation;
    }

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "failoverd admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Status, history and the operator's calls of one failoverd agent. \
                Calls that change something need `Authorization: Bearer <token>` (a token \
                from `admin.tokens`) and a `reason`, and are carried out by the leader. \
                Errors are JSON `{code, message}` with a stable `code`.",
        },
        "paths": paths,
        "components": {
            "schemas": responses.take_definitions(true),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("$ref", Value::String(r)) => out.push(r.clone()),
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(list) => list.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_resolves_and_every_route_is_described() {
        let doc = document(true);
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(!found.is_empty());
        for r in found {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("{r} points outside the components"));
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "{r} does not resolve"
            );
        }
        for (path, method) in [
            ("/v1/status", "get"),
            ("/v1/history", "get"),
            ("/v1/failovers/{id}", "get"),
            ("/v1/pause", "post"),
            ("/v1/resume", "post"),
            ("/v1/failover", "post"),
            ("/v1/switchover", "post"),
            ("/v1/drills", "post"),
            ("/v1/regions/{name}/drain", "post"),
            ("/v1/regions/{name}/restore", "post"),
            ("/v1/gate/{region}", "get"),
            ("/v1/members/{name}/{role}", "get"),
            ("/healthz", "get"),
            ("/readyz", "get"),
            ("/metrics", "get"),
            ("/", "get"),
        ] {
            assert!(
                doc["paths"][path][method].is_object(),
                "{method} {path} is missing"
            );
        }
    }

    #[test]
    fn reads_need_a_token_only_when_closed() {
        let open = document(true);
        let closed = document(false);
        assert_eq!(open["paths"]["/v1/status"]["get"]["security"], json!([]));
        assert_eq!(
            closed["paths"]["/v1/status"]["get"]["security"],
            json!([{"bearer": []}])
        );
        assert!(closed["paths"]["/v1/status"]["get"]["responses"]["401"].is_object());
        assert_eq!(open["paths"]["/healthz"]["get"]["security"], json!([]));
        assert_eq!(
            open["paths"]["/v1/pause"]["post"]["security"],
            json!([{"bearer": []}])
        );
    }

    #[test]
    fn request_bodies_refuse_unknown_fields_and_require_a_reason() {
        let doc = document(true);
        let body = &doc["paths"]["/v1/failover"]["post"]["requestBody"]["content"]
            ["application/json"]["schema"];
        assert_eq!(body["additionalProperties"], json!(false));
        let required: Vec<&str> = body["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(required.contains(&"reason") && required.contains(&"from"));
        assert!(
            !required.contains(&"dry_run"),
            "defaulted fields are optional"
        );
    }
}
