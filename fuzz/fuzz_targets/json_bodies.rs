//! Every JSON request body the API reads, through the same parser and the
//! same list checks as the handlers: a clear error or a value, never a
//! panic, and an error's field name never longer than the cut it promises.
#![no_main]

use keyward_api::error::ApiError;
use keyward_api::extract::parse_json;
use keyward_api::routes::{self, groups, keys, roles, tenants, users};
use libfuzzer_sys::fuzz_target;

fn field_is_bounded(e: &ApiError) {
    if let Some(field) = e
        .details
        .as_ref()
        .and_then(|d| d.get("field"))
        .and_then(|f| f.as_str())
    {
        // What the client sent is escaped and cut at 64 characters; a
        // missing field's name (ours) may follow its path.
        assert!(
            field.chars().count() <= 100,
            "unbounded field name: {field:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let result: Result<(), ApiError> = match which % 9 {
        0 => parse_json::<tenants::CreateTenant>(body).map(drop),
        1 => parse_json::<roles::PutRole>(body).map(drop),
        2 => parse_json::<users::CreateUser>(body)
            .and_then(|u| routes::parse_roles(&u.roles).map(drop)),
        3 => parse_json::<users::PutRoles>(body)
            .and_then(|r| routes::parse_roles(&r.roles).map(drop)),
        4 => parse_json::<groups::PutGroup>(body).map(drop),
        5 => parse_json::<keys::CreateKey>(body)
            .and_then(|k| routes::parse_roles(&k.roles).map(drop)),
        6 => parse_json::<keys::UpdateKey>(body).map(drop),
        7 => parse_json::<keys::RotateKey>(body).map(drop),
        _ => parse_json::<keys::ApiKeyBody>(body).map(drop),
    };
    if let Err(e) = result {
        field_is_bounded(&e);
    }
});
