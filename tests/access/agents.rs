//! Agents see and change only the customers and orders assigned to them, make new ones for
//! themselves, and cannot hand work to someone else; managers can.

use crate::{admin_create, admin_get, expect_forbidden, expect_json, get, id, item_ids, new_user, patch, post, send};
use crm_domain::access::Role;
use crm_tests::TestApp;
use reqwest::{Method, StatusCode};
use serde_json::json;

crm_tests::api_on_both_backends!(agents_see_and_change_only_their_customers, agents_see_and_change_only_their_orders);

async fn agents_see_and_change_only_their_customers(app: &TestApp) {
    let agent = new_user(app, Role::Agent).await;
    let colleague = new_user(app, Role::Agent).await;
    let manager = new_user(app, Role::Manager).await;
    let mine = admin_create(app, "/api/v1/customers", &json!({"name": "Στέλιος Μπιμπης", "assigned_to": agent.id})).await;
    let theirs = admin_create(app, "/api/v1/customers", &json!({"name": "Μαρία Οικονόμου", "assigned_to": colleague.id})).await;
    let nobodys = admin_create(app, "/api/v1/customers", &json!({"name": "Νίκος Παπαδάκης"})).await;
    let mine_path = format!("/api/v1/customers/{}", id(&mine));

    // Listing: only their own, whatever they ask for.
    let listed = |page: serde_json::Value| item_ids(&page);
    assert_eq!(listed(expect_json(get(app, &agent.client, "/api/v1/customers").await, StatusCode::OK).await), [id(&mine)]);
    assert_eq!(listed(expect_json(get(app, &colleague.client, "/api/v1/customers").await, StatusCode::OK).await), [id(&theirs)]);
    let asking_for_theirs = format!("/api/v1/customers?assigned_to={}", colleague.id);
    let page = expect_json(get(app, &agent.client, &asking_for_theirs).await, StatusCode::OK).await;
    assert!(!listed(page.clone()).contains(&id(&theirs).to_owned()), "an agent listed a colleague's customer: {page:#}");
    let page = expect_json(get(app, &agent.client, "/api/v1/customers?search=%CE%BC%CE%B1%CF%81%CE%B9%CE%B1").await, StatusCode::OK).await;
    assert_eq!(listed(page), Vec::<String>::new(), "searching finds only their own customers");
    let page = expect_json(get(app, &agent.client, "/api/v1/customers?include_deleted=true").await, StatusCode::OK).await;
    assert_eq!(listed(page), [id(&mine)]);
    assert_eq!(listed(admin_get(app, "/api/v1/customers").await).len(), 3);
    assert_eq!(listed(expect_json(get(app, &manager.client, "/api/v1/customers").await, StatusCode::OK).await).len(), 3);

    // Someone else's customer, or nobody's: every way in is refused, and nothing changes.
    for other in [&theirs, &nobodys] {
        let path = format!("/api/v1/customers/{}", id(other));
        expect_forbidden(get(app, &agent.client, &path).await).await;
        let mut replacement = other.clone();
        replacement["name"] = json!("Άλλαξε");
        expect_forbidden(send(app, &agent.client, Method::PUT, &path, Some(&replacement)).await).await;
        expect_forbidden(patch(app, &agent.client, &path, &json!({"name": "Άλλαξε"})).await).await;
        expect_forbidden(send(app, &agent.client, Method::DELETE, &path, None).await).await;
        expect_forbidden(get(app, &agent.client, &format!("{path}/history")).await).await;
        expect_forbidden(get(app, &agent.client, &format!("{path}/orders")).await).await;
        // Taking it over is reassigning, which agents may not do.
        expect_forbidden(patch(app, &agent.client, &path, &json!({"assigned_to": agent.id})).await).await;
        let now = admin_get(app, &path).await;
        assert_eq!(now, *other, "a refused request changed the record");
    }

    // Their own: read and change.
    let got = expect_json(get(app, &agent.client, &mine_path).await, StatusCode::OK).await;
    assert_eq!(got, mine);
    let changed = expect_json(patch(app, &agent.client, &mine_path, &json!({"organization": "Ιερός Ναός"})).await, StatusCode::OK).await;
    assert_eq!(changed["organization"], "Ιερός Ναός");
    assert_eq!(changed["assigned_to"], json!(agent.id));
    let mut replacement = changed.clone();
    replacement["contacted"] = json!(true);
    let replaced = expect_json(send(app, &agent.client, Method::PUT, &mine_path, Some(&replacement)).await, StatusCode::OK).await;
    assert_eq!(replaced["contacted"], true);
    assert_eq!(replaced["assigned_to"], json!(agent.id));
    expect_json(get(app, &agent.client, &format!("{mine_path}/history")).await, StatusCode::OK).await;
    // Agents do not delete, even their own.
    expect_forbidden(send(app, &agent.client, Method::DELETE, &mine_path, None).await).await;

    // New customers: assigned to the agent when unassigned, or when assigned to themselves;
    // assigning one to someone else is refused and makes nothing.
    let made =
        expect_json(post(app, &agent.client, "/api/v1/customers", &json!({"name": "Νέος πελάτης"})).await, StatusCode::CREATED).await;
    assert_eq!(made["assigned_to"], json!(agent.id), "{made:#}");
    let made_for_self = expect_json(
        post(app, &agent.client, "/api/v1/customers", &json!({"name": "Άλλος νέος", "assigned_to": agent.id})).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(made_for_self["assigned_to"], json!(agent.id));
    let before = listed(admin_get(app, "/api/v1/customers").await).len();
    expect_forbidden(post(app, &agent.client, "/api/v1/customers", &json!({"name": "Για άλλον", "assigned_to": colleague.id})).await).await;
    assert_eq!(listed(admin_get(app, "/api/v1/customers").await).len(), before, "a refused create made a customer");
    let page = expect_json(get(app, &agent.client, "/api/v1/customers").await, StatusCode::OK).await;
    let mut ids = listed(page);
    ids.sort();
    let mut want = vec![id(&mine).to_owned(), id(&made).to_owned(), id(&made_for_self).to_owned()];
    want.sort();
    assert_eq!(ids, want);

    // Handing their own customer to someone else, or to no one, is reassigning: refused.
    let current = admin_get(app, &mine_path).await;
    expect_forbidden(patch(app, &agent.client, &mine_path, &json!({"assigned_to": colleague.id})).await).await;
    expect_forbidden(patch(app, &agent.client, &mine_path, &json!({"assigned_to": null})).await).await;
    let mut handed_over = current.clone();
    handed_over["assigned_to"] = json!(colleague.id);
    expect_forbidden(send(app, &agent.client, Method::PUT, &mine_path, Some(&handed_over)).await).await;
    assert_eq!(admin_get(app, &mine_path).await, current, "a refused reassignment changed the record");

    // A manager may reassign; then the customer is the colleague's, not the agent's.
    let reassigned =
        expect_json(patch(app, &manager.client, &mine_path, &json!({"assigned_to": colleague.id})).await, StatusCode::OK).await;
    assert_eq!(reassigned["assigned_to"], json!(colleague.id));
    expect_forbidden(get(app, &agent.client, &mine_path).await).await;
    expect_json(get(app, &colleague.client, &mine_path).await, StatusCode::OK).await;
    let page = expect_json(get(app, &agent.client, "/api/v1/customers").await, StatusCode::OK).await;
    assert!(!listed(page).contains(&id(&mine).to_owned()));
}

async fn agents_see_and_change_only_their_orders(app: &TestApp) {
    let agent = new_user(app, Role::Agent).await;
    let colleague = new_user(app, Role::Agent).await;
    let manager = new_user(app, Role::Manager).await;
    let customer = admin_create(app, "/api/v1/customers", &json!({"name": "Στέλιος Μπιμπης", "assigned_to": agent.id})).await;
    let order = |assigned_to: Option<&str>| json!({"customer_id": id(&customer), "assigned_to": assigned_to});
    let mine = admin_create(app, "/api/v1/orders", &order(Some(&agent.id))).await;
    let theirs = admin_create(app, "/api/v1/orders", &order(Some(&colleague.id))).await;
    let nobodys = admin_create(app, "/api/v1/orders", &order(None)).await;
    let customer_orders = format!("/api/v1/customers/{}/orders", id(&customer));

    // Listings: the agent's own only, also on the customer's page (even though the customer is
    // theirs), and also when asking for someone else's.
    assert_eq!(item_ids(&expect_json(get(app, &agent.client, "/api/v1/orders").await, StatusCode::OK).await), [id(&mine)]);
    assert_eq!(item_ids(&expect_json(get(app, &agent.client, &customer_orders).await, StatusCode::OK).await), [id(&mine)]);
    let asking = format!("{customer_orders}?assigned_to={}", colleague.id);
    let page = expect_json(get(app, &agent.client, &asking).await, StatusCode::OK).await;
    assert!(!item_ids(&page).contains(&id(&theirs).to_owned()), "{page:#}");
    let asking = format!("/api/v1/orders?assigned_to={}", colleague.id);
    let page = expect_json(get(app, &agent.client, &asking).await, StatusCode::OK).await;
    assert!(!item_ids(&page).contains(&id(&theirs).to_owned()), "{page:#}");
    assert_eq!(item_ids(&admin_get(app, &customer_orders).await).len(), 3);
    assert_eq!(item_ids(&expect_json(get(app, &manager.client, &customer_orders).await, StatusCode::OK).await).len(), 3);
    // The colleague cannot open the customer at all, so not its orders either.
    expect_forbidden(get(app, &colleague.client, &customer_orders).await).await;

    // Someone else's order, or nobody's.
    for other in [&theirs, &nobodys] {
        let path = format!("/api/v1/orders/{}", id(other));
        expect_forbidden(get(app, &agent.client, &path).await).await;
        expect_forbidden(patch(app, &agent.client, &path, &json!({"notes": "άλλαξε"})).await).await;
        expect_forbidden(send(app, &agent.client, Method::DELETE, &path, None).await).await;
        assert_eq!(admin_get(app, &path).await, *other, "a refused request changed the order");
    }

    // Their own order: read and change, but not hand over.
    let mine_path = format!("/api/v1/orders/{}", id(&mine));
    expect_json(get(app, &agent.client, &mine_path).await, StatusCode::OK).await;
    let changed = expect_json(patch(app, &agent.client, &mine_path, &json!({"notes": "τηλεφώνησε"})).await, StatusCode::OK).await;
    assert_eq!(changed["notes"], "τηλεφώνησε");
    expect_forbidden(patch(app, &agent.client, &mine_path, &json!({"assigned_to": colleague.id})).await).await;
    expect_forbidden(patch(app, &agent.client, &mine_path, &json!({"assigned_to": null})).await).await;
    assert_eq!(admin_get(app, &mine_path).await["assigned_to"], json!(agent.id));

    // New orders are the agent's; for someone else, refused.
    let made =
        expect_json(post(app, &agent.client, "/api/v1/orders", &json!({"customer_id": id(&customer)})).await, StatusCode::CREATED).await;
    assert_eq!(made["assigned_to"], json!(agent.id), "{made:#}");
    expect_forbidden(post(app, &agent.client, "/api/v1/orders", &order(Some(&colleague.id))).await).await;
    let mut ids = item_ids(&expect_json(get(app, &agent.client, &customer_orders).await, StatusCode::OK).await);
    ids.sort();
    let mut want = vec![id(&mine).to_owned(), id(&made).to_owned()];
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(item_ids(&admin_get(app, &customer_orders).await).len(), 4, "the refused order was not made");

    // A manager reassigns.
    let reassigned =
        expect_json(patch(app, &manager.client, &mine_path, &json!({"assigned_to": colleague.id})).await, StatusCode::OK).await;
    assert_eq!(reassigned["assigned_to"], json!(colleague.id));
    expect_forbidden(get(app, &agent.client, &mine_path).await).await;
    assert_eq!(item_ids(&expect_json(get(app, &agent.client, &customer_orders).await, StatusCode::OK).await), [id(&made)]);
}
