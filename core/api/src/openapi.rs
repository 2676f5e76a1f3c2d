//! The OpenAPI 3.1 document, generated from the same types and route table the server uses:
//! every record type's schemas and filter parameters come from its Rust definitions, and the
//! CRUD operations are described once for all of them, as they are implemented once.

use crate::admin::{AuditParams, PasswordRequest};
use crate::auth::{LoginRequest, Me, RefreshRequest, TokenResponse};
use crate::error::Problem;
use crate::extract::ListParams;
use crate::resources::ApiResource;
use crm_domain::customer::Customer;
use crm_domain::order::Order;
use crm_domain::product::Product;
use crm_domain::user::{ApiKey, User};
use crm_store::AuditEntry;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItemBuilder};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{AllOfBuilder, ArrayBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathsBuilder, Ref, RefOr, ResponseBuilder, Schema,
};
use utoipa::{IntoParams, PartialSchema, ToSchema};

/// Metadata every record carries (flattened beside the resource's own fields).
#[derive(ToSchema)]
#[allow(dead_code)]
struct RecordMeta {
    /// Identifier (UUID v7).
    id: uuid::Uuid,
    /// Version, also sent as the ETag; send it back in `If-Match`.
    version: i64,
    /// Creation time.
    created_at: chrono::DateTime<chrono::Utc>,
    /// Last change.
    updated_at: chrono::DateTime<chrono::Utc>,
    /// Soft-deletion time; absent while live.
    deleted_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Builds the whole document.
pub fn document() -> OpenApi {
    let mut paths = PathsBuilder::new();
    let mut schemas: Vec<(String, RefOr<Schema>)> = Vec::new();
    describe::<Customer>(&mut paths, &mut schemas);
    describe::<Product>(&mut paths, &mut schemas);
    describe::<Order>(&mut paths, &mut schemas);
    describe::<User>(&mut paths, &mut schemas);
    describe::<ApiKey>(&mut paths, &mut schemas);
    paths = describe_access(paths, &mut schemas);
    paths = paths.path(
        "/api/v1/customers/{id}/orders",
        utoipa::openapi::PathItem::new(
            HttpMethod::Get,
            operation("customers", "List a customer's orders", "customer_orders")
                .parameter(id_parameter())
                .parameters(Some(ListParams::into_params(|| Some(ParameterIn::Query))))
                .response("200", json_response("A page of orders", page_schema("Order")))
                .response("404", problem("No such customer")),
        ),
    );
    for (path, summary, id) in
        [("/health", "Liveness: the process answers", "health"), ("/ready", "Readiness: the database answers", "ready")]
    {
        paths = paths.path(
            path,
            utoipa::openapi::PathItem::new(
                HttpMethod::Get,
                operation("operations", summary, id)
                    .security(SecurityRequirement::default())
                    .response("200", ResponseBuilder::new().description("OK"))
                    .response("503", problem("Not ready")),
            ),
        );
    }
    paths = paths.path(
        "/metrics",
        utoipa::openapi::PathItem::new(
            HttpMethod::Get,
            operation("operations", "Prometheus metrics", "metrics")
                .security(SecurityRequirement::default())
                .response("200", ResponseBuilder::new().description("Metrics in the Prometheus text format")),
        ),
    );
    RecordMeta::schemas(&mut schemas);
    schemas.push(("RecordMeta".into(), RecordMeta::schema()));
    Problem::schemas(&mut schemas);
    schemas.push(("Problem".into(), Problem::schema()));
    OpenApiBuilder::new()
        .info(InfoBuilder::new().title("crm-hub API").version(env!("CARGO_PKG_VERSION")).description(Some(
            "Customers, products and orders. Amounts are integers in minor units (cents). Errors are RFC 9457 problem documents. \
                     Updates take `If-Match` with the ETag from a read; a stale one gets 412.",
        )))
        .paths(paths)
        .components(Some(
            ComponentsBuilder::new()
                .schemas_from_iter(schemas)
                .security_scheme(
                    "bearer",
                    SecurityScheme::Http(
                        HttpBuilder::new()
                            .scheme(HttpAuthScheme::Bearer)
                            .description(Some("An access token from /api/v1/auth/login, or an API key (`crm_…`)"))
                            .build(),
                    ),
                )
                .build(),
        ))
        .security(Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]))
        .build()
}

fn operation(tag: &str, summary: &str, id: &str) -> OperationBuilder {
    OperationBuilder::new()
        .tag(tag)
        .summary(Some(summary))
        .operation_id(Some(id))
        .response("401", problem("Missing or invalid credentials"))
        .response("403", problem("Not allowed for this principal"))
}

fn id_parameter() -> ParameterBuilder {
    ParameterBuilder::new()
        .name("id")
        .parameter_in(ParameterIn::Path)
        .required(utoipa::openapi::Required::True)
        .schema(Some(ObjectBuilder::new().schema_type(Type::String).format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))))
}

fn if_match() -> ParameterBuilder {
    ParameterBuilder::new()
        .name("If-Match")
        .parameter_in(ParameterIn::Header)
        .description(Some("The ETag of the version the change is based on; 412 if the record has changed since."))
        .schema(Some(String::schema()))
}

fn json_response(description: &str, schema: impl Into<RefOr<Schema>>) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content("application/json", ContentBuilder::new().schema(Some(schema)).build())
}

fn problem(description: &str) -> ResponseBuilder {
    ResponseBuilder::new()
        .description(description)
        .content("application/problem+json", ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build())
}

fn record_schema(name: &str) -> AllOfBuilder {
    AllOfBuilder::new().item(Ref::from_schema_name("RecordMeta")).item(Ref::from_schema_name(name))
}

fn page_schema(name: &str) -> Schema {
    ObjectBuilder::new()
        .property("items", ArrayBuilder::new().items(record_schema(name)))
        .required("items")
        .property(
            "next_cursor",
            ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::SchemaType::from_iter([Type::String, Type::Null]))
                .description(Some("Pass as `cursor` for the next page; null on the last page")),
        )
        .into()
}

/// Adds one record type's schemas and its CRUD operations.
fn describe<R: ApiResource>(paths: &mut PathsBuilder, schemas: &mut Vec<(String, RefOr<Schema>)>) {
    let name = R::name().into_owned();
    let input = R::Input::name().into_owned();
    R::schemas(schemas);
    schemas.push((name.clone(), R::schema()));
    R::Input::schemas(schemas);
    schemas.push((input.clone(), R::Input::schema()));

    let tag = R::PATH;
    let collection = format!("/api/v1/{}", R::PATH);
    let item = format!("/api/v1/{}/{{id}}", R::PATH);
    let body = |media: &str| {
        RequestBodyBuilder::new()
            .required(Some(utoipa::openapi::Required::True))
            .content(media, ContentBuilder::new().schema(Some(Ref::from_schema_name(&input))).build())
            .build()
    };
    let invalid = || problem("Invalid body: every problem with its JSON Pointer");
    let list = operation(tag, &format!("List {}", R::PATH), &format!("list_{}", R::PATH))
        .parameters(Some(ListParams::into_params(|| Some(ParameterIn::Query))))
        .parameters(Some(R::FilterParams::into_params(|| Some(ParameterIn::Query))))
        .response("200", json_response("A page", page_schema(&name)))
        .response("400", problem("Invalid or unknown query parameter"));
    let create = operation(tag, &format!("Create a {}", R::NAME), &format!("create_{}", R::NAME))
        .request_body(Some(body("application/json")))
        .response("201", json_response("Created; ETag and Location headers set", record_schema(&name)))
        .response("409", problem("Conflicts with existing data"))
        .response("413", problem("Body too large"))
        .response("415", problem("Body is not JSON"))
        .response("422", invalid());
    let read = operation(tag, &format!("Get a {}", R::NAME), &format!("get_{}", R::NAME))
        .parameter(id_parameter())
        .parameter(ParameterBuilder::new().name("include_deleted").parameter_in(ParameterIn::Query).schema(Some(bool::schema())))
        .response("200", json_response("The record; ETag header set", record_schema(&name)))
        .response("404", problem("No such record"));
    let replace = operation(tag, &format!("Replace a {}", R::NAME), &format!("replace_{}", R::NAME))
        .parameter(id_parameter())
        .parameter(if_match())
        .request_body(Some(body("application/json")))
        .response("200", json_response("Updated", record_schema(&name)))
        .response("404", problem("No such record"))
        .response("409", problem("Conflicts with the current state"))
        .response("412", problem("The record has changed since the If-Match version"))
        .response("422", invalid());
    let patch = operation(tag, &format!("Change some fields of a {} (JSON merge patch, RFC 7396)", R::NAME), &format!("patch_{}", R::NAME))
        .parameter(id_parameter())
        .parameter(if_match())
        .request_body(Some(
            RequestBodyBuilder::new()
                .required(Some(utoipa::openapi::Required::True))
                .content("application/merge-patch+json", ContentBuilder::new().schema(Some(ObjectBuilder::new())).build())
                .build(),
        ))
        .response("200", json_response("Updated", record_schema(&name)))
        .response("404", problem("No such record"))
        .response("409", problem("Conflicts with the current state"))
        .response("412", problem("The record has changed since the If-Match version"))
        .response("422", invalid());
    let delete = operation(tag, &format!("Soft-delete a {}", R::NAME), &format!("delete_{}", R::NAME))
        .parameter(id_parameter())
        .parameter(if_match())
        .response("200", json_response("Deleted (hidden from lists unless include_deleted)", record_schema(&name)))
        .response("404", problem("No such record"))
        .response("409", problem("The record may not be deleted in its state"))
        .response("412", problem("The record has changed"));
    let restore = operation(tag, &format!("Restore a deleted {}", R::NAME), &format!("restore_{}", R::NAME))
        .parameter(id_parameter())
        .parameter(if_match())
        .response("200", json_response("Restored", record_schema(&name)))
        .response("404", problem("No such record"));

    let item_ops = PathItemBuilder::new().operation(HttpMethod::Get, read).operation(HttpMethod::Delete, delete);
    let item_ops = if R::EDITABLE { item_ops.operation(HttpMethod::Put, replace).operation(HttpMethod::Patch, patch) } else { item_ops };
    let taken = std::mem::take(paths)
        .path(&collection, PathItemBuilder::new().operation(HttpMethod::Get, list).operation(HttpMethod::Post, create).build())
        .path(&item, item_ops.build());
    *paths = if R::RESTORABLE {
        taken.path(format!("{item}/restore"), utoipa::openapi::PathItem::new(HttpMethod::Post, restore))
    } else {
        taken
    };
}

/// Sign-in, tokens, `/me`, passwords, history and the audit trail.
fn describe_access(paths: PathsBuilder, schemas: &mut Vec<(String, RefOr<Schema>)>) -> PathsBuilder {
    for (name, schema) in [
        ("LoginRequest", LoginRequest::schema()),
        ("RefreshRequest", RefreshRequest::schema()),
        ("TokenResponse", TokenResponse::schema()),
        ("PasswordRequest", PasswordRequest::schema()),
        ("Me", Me::schema()),
        ("AuditEntry", AuditEntry::schema()),
    ] {
        schemas.push((name.into(), schema));
    }
    Me::schemas(schemas);
    AuditEntry::schemas(schemas);
    let body = |name: &str| {
        RequestBodyBuilder::new()
            .required(Some(utoipa::openapi::Required::True))
            .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name(name))).build())
            .build()
    };
    let audit_page = || {
        ObjectBuilder::new().property("items", ArrayBuilder::new().items(Ref::from_schema_name("AuditEntry"))).required("items").property(
            "next_cursor",
            ObjectBuilder::new().schema_type(utoipa::openapi::schema::SchemaType::from_iter([Type::String, Type::Null])),
        )
    };
    let post = |op: OperationBuilder| utoipa::openapi::PathItem::new(HttpMethod::Post, op);
    let get = |op: OperationBuilder| utoipa::openapi::PathItem::new(HttpMethod::Get, op);
    paths
        .path(
            "/api/v1/auth/login",
            post(
                operation("auth", "Sign in with e-mail and password", "login")
                    .security(SecurityRequirement::default())
                    .request_body(Some(body("LoginRequest")))
                    .response("200", json_response("Access and refresh tokens", Ref::from_schema_name("TokenResponse")))
                    .response("401", problem("Wrong e-mail or password, or the account is disabled"))
                    .response("429", problem("Too many failed attempts; see Retry-After")),
            ),
        )
        .path(
            "/api/v1/auth/refresh",
            post(
                operation("auth", "Exchange a refresh token for new tokens (the old one is used up)", "refresh")
                    .security(SecurityRequirement::default())
                    .request_body(Some(body("RefreshRequest")))
                    .response("200", json_response("New tokens", Ref::from_schema_name("TokenResponse")))
                    .response("401", problem("Unknown, expired, revoked or reused refresh token (reuse revokes the session)")),
            ),
        )
        .path(
            "/api/v1/auth/logout",
            post(
                operation("auth", "End the session a refresh token belongs to", "logout")
                    .security(SecurityRequirement::default())
                    .request_body(Some(body("RefreshRequest")))
                    .response("204", ResponseBuilder::new().description("Signed out")),
            ),
        )
        .path(
            "/api/v1/me",
            get(operation("auth", "Who am I, and what may I do", "me")
                .response("200", json_response("The principal", Ref::from_schema_name("Me")))),
        )
        .path(
            "/api/v1/users/{id}/password",
            post(
                operation("users", "Set a user's password (ends their sessions)", "set_password")
                    .parameter(id_parameter())
                    .request_body(Some(body("PasswordRequest")))
                    .response("204", ResponseBuilder::new().description("Password set"))
                    .response("404", problem("No such user"))
                    .response("422", problem("Password too weak")),
            ),
        )
        .path(
            "/api/v1/audit",
            get(operation("audit", "The audit trail, newest first", "audit")
                .parameters(Some(AuditParams::into_params(|| Some(ParameterIn::Query))))
                .response("200", json_response("A page of audit records", audit_page()))),
        )
        .path(
            "/api/v1/customers/{id}/history",
            get(operation("customers", "A customer's change history", "customer_history")
                .parameter(id_parameter())
                .response("200", json_response("A page of audit records", audit_page()))
                .response("404", problem("No such customer"))),
        )
}
