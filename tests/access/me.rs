//! `/api/v1/me`: who the caller is and what they may do, straight from the permission table
//! (for users) or the key's grants (for API keys); a role change shows at once.

use crate::{expect_json, expect_unauthorized, get, id, new_api_key, new_user, patch};
use crm_domain::access::{Permission, Role, Scope, parse_grant, permissions};
use crm_tests::TestApp;
use reqwest::StatusCode;
use serde_json::{Value, json};

crm_tests::api_on_both_backends!(me_shows_a_users_role_and_permissions, me_shows_a_keys_grants);

fn table(role: Role) -> Value {
    serde_json::to_value(permissions(role)).expect("serialize")
}

async fn me_shows_a_users_role_and_permissions(app: &TestApp) {
    for role in Role::ALL {
        let user = new_user(app, role).await;
        let me = expect_json(get(app, &user.client, "/api/v1/me").await, StatusCode::OK).await;
        assert_eq!(me["kind"], "user", "{me:#}");
        assert_eq!(me["user"]["id"], json!(user.id), "{me:#}");
        assert_eq!(me["user"]["role"], role.as_str(), "{me:#}");
        assert_eq!(me["user"]["active"], true, "{me:#}");
        assert!(me.get("api_key").is_none(), "{me:#}");
        assert_eq!(me["permissions"], table(role), "{role:?}");
        let text = me.to_string();
        assert!(!text.contains("password") && !text.contains("$argon2"), "{me:#}");
    }
    // The tables really differ by role (a table that shows the same thing for everyone would
    // pass the comparison above).
    assert_ne!(table(Role::Admin), table(Role::Manager));
    assert_ne!(table(Role::Manager), table(Role::Agent));
    assert!(permissions(Role::Agent).iter().any(|p| p.scope == Scope::Assigned));

    // A role change shows at once, with the same access token.
    let user = new_user(app, Role::Agent).await;
    let changed =
        expect_json(patch(app, &app.client, &format!("/api/v1/users/{}", user.id), &json!({"role": "manager"})).await, StatusCode::OK)
            .await;
    assert_eq!(changed["role"], "manager");
    let me = expect_json(get(app, &user.client, "/api/v1/me").await, StatusCode::OK).await;
    assert_eq!(me["user"]["role"], "manager");
    assert_eq!(me["permissions"], table(Role::Manager));

    expect_unauthorized(get(app, &app.anonymous, "/api/v1/me").await).await;
}

async fn me_shows_a_keys_grants(app: &TestApp) {
    let scopes = ["customers:view", "orders:edit"];
    let (record, client) = new_api_key(app, &scopes).await;
    let me = expect_json(get(app, &client, "/api/v1/me").await, StatusCode::OK).await;
    assert_eq!(me["kind"], "api_key", "{me:#}");
    assert_eq!(me["api_key"]["id"], json!(id(&record)), "{me:#}");
    assert_eq!(me["api_key"]["scopes"], json!(scopes), "{me:#}");
    assert!(me.get("user").is_none(), "{me:#}");
    let want: Vec<Permission> = scopes
        .iter()
        .map(|s| {
            let (area, action) = parse_grant(s).expect("grant");
            Permission { area, action, scope: Scope::All }
        })
        .collect();
    assert_eq!(me["permissions"], serde_json::to_value(want).unwrap(), "{me:#}");
    assert_eq!(me["permissions"][0], json!({"area": "customers", "action": "view", "scope": "all"}));
}
