//! `GET /api/v1/openapi.json`: the OpenAPI 3 document, generated from the
//! handlers' annotations, then completed from the code's own tables: the
//! error codes, the answers every authenticated endpoint may give, and the
//! security schemes.

use std::sync::OnceLock;

use actix_web::{HttpResponse, web};
use serde_json::{Value, json};
use utoipa::OpenApi;

use super::{audit, events, groups, ingestors, keys, roles, tenants, users};
use keyward_core::store::audit::Action;

use crate::error::Code;
use crate::extract::BODY_LIMIT;

#[derive(OpenApi)]
#[openapi(
    info(title = "Keyward admin API", version = "1"),
    paths(
        tenants::create,
        tenants::list,
        roles::put,
        roles::get,
        roles::list,
        roles::delete,
        users::create,
        users::list,
        users::get,
        users::put_roles,
        users::delete,
        users::permissions,
        groups::put,
        groups::get,
        groups::list,
        groups::delete,
        keys::create,
        keys::list,
        keys::get,
        keys::revoke,
        keys::retry,
        keys::update,
        keys::rotate,
        keys::validate,
        keys::verify,
        events::get,
        audit::list_tenant,
        audit::list_all,
        ingestors::list,
        keyward_core::ops::healthz,
        keyward_core::ops::readyz,
        keyward_core::ops::metrics,
        document,
        reference_page,
    ),
    components(schemas(crate::error::ErrorBody))
)]
struct ApiDoc;

/// The OpenAPI 3 document of this API.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations",
    responses((status = 200, description = "this document", content_type = "application/json")))]
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(spec())
}

/// The API reference: this document rendered as HTML by the page itself,
/// with nothing fetched from anywhere but this server.
#[utoipa::path(get, path = "/docs", tag = "operations",
    responses((status = 200, description = "an HTML page", content_type = "text/html")))]
pub async fn reference_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        // The page runs only its own inline script, and talks only to the
        // server it came from (for the document).
        .insert_header((
            "Content-Security-Policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'",
        ))
        .body(include_str!("docs.html"))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/openapi.json", web::get().to(document))
        .route("/docs", web::get().to(reference_page));
}

/// The document, built once.
pub fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(build)
}

fn build() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
    let codes: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
    let table: String = Code::ALL
        .iter()
        .map(|c| {
            let (code, status, message) = (c.as_str(), c.status().as_u16(), c.default_message());
            format!("| `{code}` | {status} | {message} |\n")
        })
        .collect();
    doc["info"]["description"] = json!(format!(
        "Every non-2xx answer is `{{\"error\": {{code, message, requestId, details?}}}}`; \
         `X-Request-Id` is on every response. Bodies are JSON (`Content-Type: \
         application/json`) of at most {BODY_LIMIT} bytes; unknown fields are refused \
         (400 with `details.field`). Lists answer `{{\"items\": [...]}}`.\n\n\
         | code | status | message |\n|---|---|---|\n{table}"
    ));
    doc["components"]["schemas"]["ErrorObject"]["properties"]["code"]["enum"] = json!(codes);
    doc["components"]["securitySchemes"] = json!({
        "basic": {"type": "http", "scheme": "basic"},
        "bearer": {"type": "http", "scheme": "bearer", "description": "a Keyward API key"},
    });
    add_own_tenant_aliases(&mut doc);
    let error = |what: &str| {
        json!({"description": what,
               "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}})
    };
    if let Some(paths) = doc["paths"].as_object_mut() {
        for item in paths.values_mut() {
            let Some(ops) = item.as_object_mut() else {
                continue;
            };
            for op in ops.values_mut() {
                // utoipa names operations after their functions (`list`);
                // the tag makes them unique (`roles.list`).
                if let (Some(tag), Some(id)) = (op["tags"][0].as_str(), op["operationId"].as_str())
                {
                    op["operationId"] = json!(format!("{tag}.{id}"));
                }
                describe_parameters(op);
                let authenticated = op.get("security").is_some();
                let has_body = op.get("requestBody").is_some();
                let in_tenant = op["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["name"] == "t"));
                let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
                    continue;
                };
                let mut add = |status: &str, what: &str| {
                    responses
                        .entry(status.to_owned())
                        .or_insert_with(|| error(what));
                };
                if authenticated {
                    add(
                        "400",
                        "`invalid_request`: a bad path segment, query or body",
                    );
                    add("401", "`unauthenticated` (with `WWW-Authenticate`)");
                    add("403", "`forbidden`");
                    add(
                        "429",
                        "`rate_limited`: too many failed password proofs (with `Retry-After`)",
                    );
                    add("503", "`unavailable` (with `Retry-After`)");
                }
                if in_tenant {
                    add(
                        "404",
                        "`tenant_not_found` (a superadmin naming a tenant that does not exist)",
                    );
                }
                if has_body {
                    add("408", "`request_timeout`: the body did not arrive in time");
                    add("413", "`payload_too_large`");
                    add("415", "`unsupported_media_type`");
                }
                add("500", "`internal`");
                // OpenAPI requires a description on every response.
                for (status, response) in responses.iter_mut() {
                    if response.get("description").is_none() {
                        response["description"] = json!(format!("{status}: success"));
                    }
                }
            }
        }
    }
    doc
}

/// Path and query parameters with the schema of what they hold (the
/// handlers take them as strings): a client or a schema fuzzer then knows
/// a valid tenant id, name or ULID.
fn describe_parameters(op: &mut Value) {
    let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) else {
        return;
    };
    for p in params {
        let schema = match p["name"].as_str() {
            Some("t" | "tenant") => json!({"$ref": "#/components/schemas/TenantId"}),
            Some("name" | "u") => json!({"$ref": "#/components/schemas/RoleName"}),
            Some("keyId") => json!({"$ref": "#/components/schemas/KeyId"}),
            Some("eventId") => json!({"$ref": "#/components/schemas/EventId"}),
            Some("status") => {
                json!({"type": "string", "enum": ["active", "revoked", "expired", "all"]})
            }
            Some("action") => json!({"type": "string",
                "enum": Action::ALL.iter().map(|a| a.as_str()).collect::<Vec<_>>()}),
            Some("limit") => json!({"type": "integer", "minimum": 1, "maximum": 200}),
            _ => continue,
        };
        p["schema"] = schema;
    }
}

/// `/api/v1/apikeys…` answers like `/api/v1/tenants/{t}/apikeys…` for the
/// caller's own tenant: the same operations without the `t` parameter.
fn add_own_tenant_aliases(doc: &mut Value) {
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    let prefix = "/api/v1/tenants/{t}/apikeys";
    let aliases: Vec<(String, Value)> = paths
        .iter()
        .filter(|(path, _)| path.starts_with(prefix))
        .map(|(path, item)| {
            let mut item = item.clone();
            if let Some(ops) = item.as_object_mut() {
                for op in ops.values_mut() {
                    if let Some(params) = op["parameters"].as_array_mut() {
                        params.retain(|p| p["name"] != "t");
                    }
                    if let Some(id) = op["operationId"].as_str() {
                        op["operationId"] = json!(format!("{id}_own_tenant"));
                    }
                }
            }
            (path.replacen(prefix, "/api/v1/apikeys", 1), item)
        })
        .collect();
    paths.extend(aliases);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_code_is_documented() {
        let text = spec().to_string();
        for code in Code::ALL.iter().map(|c| c.as_str()) {
            assert!(text.contains(&format!("`{code}`")), "{code}");
        }
    }

    /// `docs/api.md`'s endpoint table holds exactly the document's
    /// operations, each with the statuses the document declares, and its
    /// error table every code with its status: the page cannot drift from
    /// the code.
    #[test]
    fn docs_api_md_matches_the_openapi_document() {
        use std::collections::BTreeMap;
        let page = include_str!("../../../docs/api.md");
        // The table rows (`| `…` | … |`) of the section headed `## {title}`.
        let rows = |title: &str| -> Vec<Vec<String>> {
            let section = page
                .split("\n## ")
                .find(|s| s.starts_with(title))
                .unwrap_or_else(|| panic!("docs/api.md has a section {title}"));
            section
                .lines()
                .filter(|l| l.starts_with("| `"))
                .map(|row| {
                    let cells = row.trim_matches('|').split(" | ");
                    cells
                        .map(|c| c.trim().trim_matches('`').to_owned())
                        .collect()
                })
                .collect()
        };
        let mut documented = BTreeMap::new();
        // | `METHOD /path` | what | success | errors |
        for cells in rows("Endpoints\n") {
            let mut statuses: Vec<String> = cells[2..4]
                .iter()
                .flat_map(|c| c.split(", "))
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            statuses.sort();
            let op = cells[0].clone();
            assert!(
                documented.insert(op.clone(), statuses).is_none(),
                "{op} twice"
            );
        }
        // | `code` | status | when |
        let codes: BTreeMap<String, String> = rows("Errors\n")
            .into_iter()
            .map(|cells| (cells[0].clone(), cells[1].clone()))
            .collect();
        let mut expected = BTreeMap::new();
        for (path, ops) in spec()["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                let mut statuses: Vec<String> = op["responses"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .cloned()
                    .collect();
                statuses.sort();
                expected.insert(format!("{} {path}", method.to_uppercase()), statuses);
            }
        }
        assert_eq!(documented, expected, "docs/api.md's endpoint table");
        for code in Code::ALL {
            assert_eq!(
                codes.get(code.as_str()).map(String::as_str),
                Some(code.status().as_str()),
                "docs/api.md's error table: `{}`",
                code.as_str()
            );
        }
        assert_eq!(codes.len(), Code::ALL.len(), "no code that does not exist");
    }

    #[test]
    fn every_route_is_documented() {
        let paths = spec()["paths"].as_object().unwrap();
        for (path, methods) in [
            ("/api/v1/tenants", &["get", "post"][..]),
            ("/api/v1/tenants/{t}/roles", &["get"]),
            (
                "/api/v1/tenants/{t}/roles/{name}",
                &["get", "put", "delete"],
            ),
            ("/api/v1/tenants/{t}/users", &["get", "post"]),
            ("/api/v1/tenants/{t}/users/{u}", &["get", "delete"]),
            ("/api/v1/tenants/{t}/users/{u}/roles", &["put"]),
            ("/api/v1/tenants/{t}/users/{u}/permissions", &["get"]),
            ("/api/v1/tenants/{t}/groups", &["get"]),
            (
                "/api/v1/tenants/{t}/groups/{name}",
                &["get", "put", "delete"],
            ),
            ("/healthz", &["get"]),
            ("/readyz", &["get"]),
            ("/metrics", &["get"]),
            ("/api/v1/openapi.json", &["get"]),
            ("/docs", &["get"]),
            ("/api/v1/tenants/{t}/apikeys", &["get", "post"]),
            (
                "/api/v1/tenants/{t}/apikeys/{keyId}",
                &["get", "delete", "patch"],
            ),
            ("/api/v1/tenants/{t}/apikeys/{keyId}/rotate", &["post"]),
            ("/api/v1/tenants/{t}/audit", &["get"]),
            ("/api/v1/audit", &["get"]),
            ("/api/v1/tenants/{t}/apikeys/validate", &["post"]),
            (
                "/api/v1/tenants/{t}/apikeys/{keyId}/revocation/retry",
                &["post"],
            ),
            ("/api/v1/apikeys", &["get", "post"]),
            ("/api/v1/apikeys/{keyId}", &["get", "delete", "patch"]),
            ("/api/v1/apikeys/{keyId}/rotate", &["post"]),
            ("/api/v1/apikeys/validate", &["post"]),
            ("/api/v1/apikeys/{keyId}/revocation/retry", &["post"]),
            ("/api/v1/verify", &["post"]),
        ] {
            for m in methods {
                assert!(
                    paths.get(path).and_then(|p| p.get(m)).is_some(),
                    "{m} {path}"
                );
            }
        }
    }
}
