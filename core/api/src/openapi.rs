//! The OpenAPI 3.1 document, generated from the same types and route table the server uses:
//! every record type's schemas and filter parameters come from its Rust definitions, and the
//! CRUD operations are described once for all of them, as they are implemented once.

use crate::error::Problem;
use crate::extract::ListParams;
use crate::resources::ApiResource;
use crm_domain::customer::Customer;
use crm_domain::order::Order;
use crm_domain::product::Product;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItemBuilder};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{AllOfBuilder, ArrayBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type};
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
        .components(Some(ComponentsBuilder::new().schemas_from_iter(schemas).build()))
        .build()
}

fn operation(tag: &str, summary: &str, id: &str) -> OperationBuilder {
    OperationBuilder::new().tag(tag).summary(Some(summary)).operation_id(Some(id))
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

    let taken = std::mem::take(paths);
    *paths = taken
        .path(&collection, PathItemBuilder::new().operation(HttpMethod::Get, list).operation(HttpMethod::Post, create).build())
        .path(
            &item,
            PathItemBuilder::new()
                .operation(HttpMethod::Get, read)
                .operation(HttpMethod::Put, replace)
                .operation(HttpMethod::Patch, patch)
                .operation(HttpMethod::Delete, delete)
                .build(),
        )
        .path(format!("{item}/restore"), utoipa::openapi::PathItem::new(HttpMethod::Post, restore));
}
