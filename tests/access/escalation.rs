//! Nobody can hand out more than they hold, the last admin stays, and records point only at
//! what exists and is visible: the rules that keep the permission table from being bypassed.

use crate::{admin_create, expect_json, expect_problem, id, new_api_key, new_user, patch, pointers, post, send};
use crm_domain::access::Role;
use crm_tests::TestApp;
use reqwest::{Method, StatusCode};
use serde_json::json;

crm_tests::api_on_both_backends!(
    grants_never_exceed_the_grantor,
    the_last_admin_stays,
    agents_order_only_for_their_customers,
    assignees_must_be_active_users,
    a_customers_orders_need_only_orders_view,
);

async fn grants_never_exceed_the_grantor(app: &TestApp) {
    // A key that may make keys cannot make one stronger than itself...
    let (_, key_maker) = new_api_key(app, &["api_keys:edit", "api_keys:view"]).await;
    let body = json!({"name": "escalation", "scopes": ["users:admin"]});
    expect_problem(post(app, &key_maker, "/api/v1/api-keys", &body).await, StatusCode::FORBIDDEN).await;
    // ...but can pass on what it holds.
    let body = json!({"name": "peer", "scopes": ["api_keys:view"]});
    expect_json(post(app, &key_maker, "/api/v1/api-keys", &body).await, StatusCode::CREATED).await;

    // A key that may edit users cannot create an admin (or a manager: it lacks their rights),
    // nor promote an agent.
    let (_, user_editor) = new_api_key(app, &["users:edit", "users:view"]).await;
    for role in ["admin", "manager"] {
        let body = json!({"email": format!("{role}@escalation.example.gr"), "display_name": "x", "role": role, "password": "long enough password"});
        expect_problem(post(app, &user_editor, "/api/v1/users", &body).await, StatusCode::FORBIDDEN).await;
    }
    let agent =
        admin_create(app, "/api/v1/users", &json!({"email": "agent@escalation.example.gr", "display_name": "a", "role": "agent"})).await;
    let path = format!("/api/v1/users/{}", id(&agent));
    expect_problem(patch(app, &user_editor, &path, &json!({"role": "admin"})).await, StatusCode::FORBIDDEN).await;
    let unchanged = expect_json(send(app, &app.client, Method::GET, &path, None).await, StatusCode::OK).await;
    assert_eq!(unchanged["role"], "agent");
    // Renaming without touching the role is fine.
    let renamed = expect_json(patch(app, &user_editor, &path, &json!({"display_name": "Άννα"})).await, StatusCode::OK).await;
    assert_eq!(renamed["display_name"], "Άννα");
}

async fn the_last_admin_stays(app: &TestApp) {
    let first = new_user(app, Role::Admin).await;
    let path = format!("/api/v1/users/{}", first.id);
    // The only active admin can neither demote, disable nor delete themselves.
    for change in [json!({"role": "manager"}), json!({"active": false})] {
        let problem = expect_problem(patch(app, &first.client, &path, &change).await, StatusCode::CONFLICT).await;
        assert_eq!(pointers(&problem), ["/role"], "{problem:#}");
    }
    expect_problem(send(app, &first.client, Method::DELETE, &path, None).await, StatusCode::CONFLICT).await;
    // With a second admin, the first may step down.
    let second = new_user(app, Role::Admin).await;
    let demoted = expect_json(patch(app, &second.client, &path, &json!({"role": "manager"})).await, StatusCode::OK).await;
    assert_eq!(demoted["role"], "manager");
    let second_path = format!("/api/v1/users/{}", second.id);
    expect_problem(patch(app, &second.client, &second_path, &json!({"active": false})).await, StatusCode::CONFLICT).await;
}

async fn agents_order_only_for_their_customers(app: &TestApp) {
    let agent = new_user(app, Role::Agent).await;
    let colleague = new_user(app, Role::Agent).await;
    let theirs = admin_create(app, "/api/v1/customers", &json!({"name": "Ενορία Αγίας Τριάδας", "assigned_to": colleague.id})).await;
    let mine =
        expect_json(post(app, &agent.client, "/api/v1/customers", &json!({"name": "Ενορία Αγίου Γεωργίου"})).await, StatusCode::CREATED)
            .await;
    let missing = uuid::Uuid::now_v7();

    // A colleague's customer and a missing one look the same to the agent.
    let order =
        |customer: &str| json!({"customer_id": customer, "items": [{"type": "service", "description": "κούρδισμα", "unit_price": 5_000}]});
    for customer in [id(&theirs).to_owned(), missing.to_string()] {
        let problem =
            expect_problem(post(app, &agent.client, "/api/v1/orders", &order(&customer)).await, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(pointers(&problem), ["/customer_id"], "{problem:#}");
    }
    let created = expect_json(post(app, &agent.client, "/api/v1/orders", &order(id(&mine))).await, StatusCode::CREATED).await;
    assert_eq!(created["assigned_to"], json!(agent.id));
    // Nor can an agent move their order onto a colleague's customer.
    let path = format!("/api/v1/orders/{}", id(&created));
    let problem =
        expect_problem(patch(app, &agent.client, &path, &json!({"customer_id": id(&theirs)})).await, StatusCode::UNPROCESSABLE_ENTITY)
            .await;
    assert_eq!(pointers(&problem), ["/customer_id"]);
    // A manager may order for anyone's customer.
    let manager = new_user(app, Role::Manager).await;
    expect_json(post(app, &manager.client, "/api/v1/orders", &order(id(&theirs))).await, StatusCode::CREATED).await;
}

async fn assignees_must_be_active_users(app: &TestApp) {
    let nobody = uuid::Uuid::now_v7();
    for path in ["/api/v1/customers", "/api/v1/orders"] {
        let customer = admin_create(app, "/api/v1/customers", &json!({"name": "Πελάτης"})).await;
        let body = if path.ends_with("customers") {
            json!({"name": "Άλλος πελάτης", "assigned_to": nobody})
        } else {
            json!({"customer_id": id(&customer), "assigned_to": nobody})
        };
        let problem = expect_problem(post(app, &app.client, path, &body).await, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(pointers(&problem), ["/assigned_to"], "{path}: {problem:#}");
    }
    // A disabled user cannot be given work either.
    let leaver = new_user(app, Role::Agent).await;
    expect_json(patch(app, &app.client, &format!("/api/v1/users/{}", leaver.id), &json!({"active": false})).await, StatusCode::OK).await;
    let customer = admin_create(app, "/api/v1/customers", &json!({"name": "Τρίτος πελάτης"})).await;
    let path = format!("/api/v1/customers/{}", id(&customer));
    let problem =
        expect_problem(patch(app, &app.client, &path, &json!({"assigned_to": leaver.id})).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(pointers(&problem), ["/assigned_to"]);
    // An active one can.
    let worker = new_user(app, Role::Agent).await;
    let assigned = expect_json(patch(app, &app.client, &path, &json!({"assigned_to": worker.id})).await, StatusCode::OK).await;
    assert_eq!(assigned["assigned_to"], json!(worker.id));
}

async fn a_customers_orders_need_only_orders_view(app: &TestApp) {
    let customer = admin_create(app, "/api/v1/customers", &json!({"name": "Μητρόπολη"})).await;
    admin_create(app, "/api/v1/orders", &json!({"customer_id": id(&customer)})).await;
    let (_, orders_reader) = new_api_key(app, &["orders:view"]).await;
    let page = expect_json(
        send(app, &orders_reader, Method::GET, &format!("/api/v1/customers/{}/orders", id(&customer)), None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page:#}");
    // A customer that does not exist is still a 404.
    let missing = format!("/api/v1/customers/{}/orders", uuid::Uuid::now_v7());
    expect_problem(send(app, &orders_reader, Method::GET, &missing, None).await, StatusCode::NOT_FOUND).await;
}
