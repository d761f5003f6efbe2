//! (5) Create: keys per second through `POST …/apikeys` (Basic admin, one
//! role) under `wrk`, and the API's CPU per created key, next to healthz.

use base64::Engine;
use keyward_tests::bench::wrk::{self, Wrk};
use keyward_tests::bench::{PASSWORD, admin, started};
use serde_json::json;

use crate::report;

const SECONDS: u64 = 10;
/// An admin tool's worth of concurrency, not a flood: creates are writes.
const WRK: (usize, usize) = (2, 16);

pub async fn run(stores: &[&str]) {
    let mut rows = Vec::new();
    for store in stores {
        let Some(db) = crate::database(store).await else {
            continue;
        };
        let node = started(
            "keyward-api",
            &[
                ("KEYWARD_DATABASE_URL", db.url.as_str()),
                ("KEYWARD_ADMIN_PASSWORD", PASSWORD),
            ],
        )
        .await;
        let http = reqwest::Client::new();
        let post = reqwest::Method::POST;
        let res = admin(
            &http,
            &node,
            post,
            "/api/v1/tenants",
            Some(json!({"id": "acme"})),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(res.status(), 201);
        let role = json!({"privileges": [{"privilege": "ingestor"}]});
        let path = "/api/v1/tenants/acme/roles/shippers";
        let res = admin(&http, &node, reqwest::Method::PUT, path, Some(role))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let healthz = wrk::run(WRK, &node, "/healthz", SECONDS, None);
        let created = wrk::run_script(WRK, &node, "/", SECONDS, Some(&script()));
        rows.push(row(store, &created, &healthz));
    }
    let text = report::table(
        &[
            "store",
            "healthz (wrk, 16 connections)",
            "create",
            "API CPU per create",
        ],
        &rows,
    );
    println!("{text}");
    report::write("create", &text);
}

/// Each request a key of a name no other request uses.
fn script() -> String {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("admin:{PASSWORD}"));
    format!(
        r#"
local n = 0
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
function request()
  n = n + 1
  return wrk.format('POST', '/api/v1/tenants/acme/apikeys',
    {{['Content-Type'] = 'application/json', ['Authorization'] = 'Basic {basic}'}},
    '{{"name":"c' .. tid .. '-' .. n .. '","roles":["shippers"]}}')
end
"#
    )
}

fn row(store: &str, created: &Wrk, healthz: &Wrk) -> Vec<String> {
    vec![
        store.to_owned(),
        healthz.summary(),
        format!(
            "{} ({:.1} % of healthz)",
            created.summary(),
            100.0 * created.rps() / healthz.rps().max(1.0)
        ),
        format!(
            "{:.0} µs (healthz {:.0} µs)",
            created.cpu_us(),
            healthz.cpu_us()
        ),
    ]
}
