//! Keyward mounted under a prefix inside another actix-web application
//! (`keyward_api::embed`), with that application's own routes beside it.

use actix_web::http::{StatusCode, header};
use actix_web::{App, HttpResponse, test, web};
use keyward_api::embed::KeywardApi;
use keyward_core::testing::TestDatabase;
use serde_json::{Value, json};

use crate::support::{ADMIN_PASSWORD, test_settings};

fn basic() -> String {
    use base64::Engine;
    let raw = format!("admin:{ADMIN_PASSWORD}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

fn location(res: &actix_web::dev::ServiceResponse) -> String {
    let value = res.headers().get(header::LOCATION).expect("Location");
    value.to_str().unwrap().to_owned()
}

#[actix_web::test]
async fn mounted_under_a_prefix_beside_the_hosts_own_routes() {
    let db = TestDatabase::sqlite().await;
    let keyward = KeywardApi::new(&test_settings(&db.url), db.store())
        .await
        .unwrap();
    let app = test::init_service(
        App::new()
            .route(
                "/",
                web::get().to(|| async { HttpResponse::Ok().body("host") }),
            )
            .service(keyward.scope("/keyward"))
            .route(
                "/after",
                web::get().to(|| async { HttpResponse::Ok().body("after") }),
            ),
    )
    .await;
    let call = |method: actix_web::http::Method, uri: &str, body: Option<Value>| {
        let mut req = test::TestRequest::default()
            .method(method)
            .uri(uri)
            .insert_header((header::AUTHORIZATION, basic()));
        if let Some(body) = body {
            req = req.set_json(body);
        }
        req.to_request()
    };
    use actix_web::http::Method;

    // The host's routes, before and after the mount, are the host's.
    let res = test::call_service(&app, call(Method::GET, "/", None)).await;
    assert_eq!(test::read_body(res).await, "host");
    let res = test::call_service(&app, call(Method::GET, "/after", None)).await;
    assert_eq!(test::read_body(res).await, "after");
    let res = test::call_service(&app, call(Method::GET, "/elsewhere", None)).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(
        test::read_body(res).await.is_empty(),
        "the host's own 404, not Keyward's"
    );

    // Keyward's, under the prefix, with `Location` carrying it.
    let res = test::call_service(&app, call(Method::GET, "/keyward/healthz", None)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = test::call_service(
        &app,
        call(
            Method::POST,
            "/keyward/api/v1/tenants",
            Some(json!({"id": "acme"})),
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(location(&res), "/keyward/api/v1/tenants/acme");
    let res = test::call_service(
        &app,
        call(
            Method::PUT,
            "/keyward/api/v1/tenants/acme/roles/shippers",
            Some(json!({"privileges": [{"privilege": "ingestor"}]})),
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(
        location(&res),
        "/keyward/api/v1/tenants/acme/roles/shippers"
    );
    let res = test::call_service(
        &app,
        call(
            Method::POST,
            "/keyward/api/v1/tenants/acme/apikeys",
            Some(json!({"name": "ci", "roles": ["shippers"]})),
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let key_location = location(&res);
    let created: Value = test::read_body_json(res).await;
    let key_id = created["keyId"].as_str().unwrap();
    assert_eq!(
        key_location,
        format!("/keyward/api/v1/tenants/acme/apikeys/{key_id}")
    );
    let res = test::call_service(&app, call(Method::GET, &key_location, None)).await;
    assert_eq!(res.status(), StatusCode::OK);

    // Verification answers there too (the admin is a superadmin).
    let secret = created["secret"].as_str().unwrap();
    let res = test::call_service(
        &app,
        call(
            Method::POST,
            "/keyward/api/v1/verify",
            Some(json!({"apiKey": secret})),
        ),
    )
    .await;
    let answer: Value = test::read_body_json(res).await;
    assert_eq!(answer["valid"], true, "{answer}");
    assert_eq!(answer["tenantId"], "acme");

    // An unknown path under the prefix is Keyward's, in its error shape.
    let res = test::call_service(&app, call(Method::GET, "/keyward/nope", None)).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let body: Value = test::read_body_json(res).await;
    assert_eq!(body["error"]["code"], "not_found");
}
