//! The OpenAPI 3.1 document, generated from the same types and route table the server uses:
//! every record type's schemas and filter parameters come from its Rust definitions, and the
//! CRUD operations are described once for all of them, as they are implemented once.

use crate::admin::{AuditParams, PasswordRequest};
use crate::auth::{LoginRequest, Me, RefreshRequest, TokenResponse};
use crate::bus::{BusStatus, ConnectorList, DeadLetterParams, ReplayRequest};
use crate::comms::{AssignRequest, CommsParams, InboxParams, SendRequest, timeline_filters};
use crate::error::Problem;
use crate::extract::ListParams;
use crate::resources::ApiResource;
use crm_domain::comms::{CommsEntry, Media};
use crm_domain::customer::Customer;
use crm_domain::order::Order;
use crm_domain::product::Product;
use crm_domain::user::{ApiKey, User};
use crm_store::{AuditEntry, DeadLetter};
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
    describe::<CommsEntry>(&mut paths, &mut schemas);
    describe::<Media>(&mut paths, &mut schemas);
    paths = describe_access(paths, &mut schemas);
    paths = describe_comms(paths, &mut schemas);
    paths = describe_bus(paths, &mut schemas);
    paths = describe_plugins(paths, &mut schemas);
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
            "Customers, products, orders, the communications log and media, and the message bus. Amounts are integers in minor units (cents). Errors are RFC 9457 problem documents. \
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
    // A filter named like a common parameter (the log's `direction`) documents both.
    let common = ListParams::into_params(|| Some(ParameterIn::Query)).into_iter().filter(|p| !R::FILTERS.contains(&p.name.as_str()));
    let list = operation(tag, &format!("List {}", R::PATH), &format!("list_{}", R::PATH))
        .parameters(Some(common))
        .parameters(Some(R::FilterParams::into_params(|| Some(ParameterIn::Query))))
        .response("200", json_response("A page", page_schema(&name)))
        .response("400", problem("Invalid or unknown query parameter"));
    let create_body = if R::UPLOADS {
        RequestBodyBuilder::new()
            .required(Some(utoipa::openapi::Required::True))
            .description(Some("JSON: metadata of a file already in the file store. multipart/form-data: an upload."))
            .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name(&input))).build())
            .content("multipart/form-data", ContentBuilder::new().schema(Some(upload_form())).build())
            .build()
    } else {
        body("application/json")
    };
    let create = operation(tag, &format!("Create a {}", R::NAME), &format!("create_{}", R::NAME))
        .request_body(Some(create_body))
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

    let create = if R::UPLOADS {
        create
            .response(
                "202",
                json_response(
                    "Uploaded: the file is pending until the files connector has stored it; ETag and Location set",
                    record_schema(&name),
                ),
            )
            .response("503", problem("Too many files are moving at once; see Retry-After"))
    } else {
        create
    };
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

/// The form of an upload.
fn upload_form() -> ObjectBuilder {
    let text = |description: &str| ObjectBuilder::new().schema_type(Type::String).description(Some(description));
    let uuid = |description: &str| text(description).format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)));
    ObjectBuilder::new()
        .property(
            "file",
            text("The file; its part's file name and content type are kept (override the name with `filename`)")
                .content_media_type("application/octet-stream"),
        )
        .required("file")
        .property("customer_id", uuid("The customer (this or `order_id` is required)"))
        .property("order_id", uuid("The order"))
        .property("direction", text("`received`, `sent` or `internal` (default)"))
        .property("tags", ArrayBuilder::new().items(text("A tag")).description(Some("Tags (repeat the field)")))
        .property("filename", text("File name to keep instead of the part's"))
}

/// A page of records of the schema `name`.
fn page_of(name: &str) -> ObjectBuilder {
    ObjectBuilder::new().property("items", ArrayBuilder::new().items(Ref::from_schema_name(name))).required("items").property(
        "next_cursor",
        ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::SchemaType::from_iter([Type::String, Type::Null]))
            .description(Some("Pass as `cursor` for the next page; null on the last page")),
    )
}

fn json_body(name: &str, required: bool) -> utoipa::openapi::request_body::RequestBody {
    let required = if required { utoipa::openapi::Required::True } else { utoipa::openapi::Required::False };
    RequestBodyBuilder::new()
        .required(Some(required))
        .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name(name))).build())
        .build()
}

/// A customer's timeline, outbound messages, the unmatched inbox and media content.
fn describe_comms(paths: PathsBuilder, schemas: &mut Vec<(String, RefOr<Schema>)>) -> PathsBuilder {
    for (name, schema) in [("SendRequest", SendRequest::schema()), ("AssignRequest", AssignRequest::schema())] {
        schemas.push((name.into(), schema));
    }
    SendRequest::schemas(schemas);
    let timeline_params =
        CommsParams::into_params(|| Some(ParameterIn::Query)).into_iter().filter(|p| timeline_filters().contains(&p.name.as_str()));
    let assign_response = ObjectBuilder::new()
        .property("entry", record_schema("CommsEntry"))
        .required("entry")
        .property(
            "contact_added",
            ObjectBuilder::new()
                .schema_type(Type::Boolean)
                .description(Some("Whether the sender's address was added to the customer's contacts")),
        )
        .required("contact_added")
        .property(
            "also_assigned",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .description(Some("Other unmatched entries from the same address, assigned with it")),
        )
        .required("also_assigned");
    let post = |op: OperationBuilder| utoipa::openapi::PathItem::new(HttpMethod::Post, op);
    let get = |op: OperationBuilder| utoipa::openapi::PathItem::new(HttpMethod::Get, op);
    paths
        .path(
            "/api/v1/customers/{id}/timeline",
            get(operation("comms", "A customer's communications, latest first", "customer_timeline")
                .parameter(id_parameter())
                .parameters(Some(
                    ListParams::into_params(|| Some(ParameterIn::Query)).into_iter().filter(|p| !timeline_filters().contains(&p.name.as_str())),
                ))
                .parameters(Some(timeline_params))
                .response("200", json_response("A page of log entries", page_schema("CommsEntry")))
                .response("400", problem("Invalid or unknown query parameter"))
                .response("404", problem("No such customer"))),
        )
        .path(
            "/api/v1/customers/{id}/messages",
            post(operation("comms", "Send a message to a customer (email, WhatsApp, SMS)", "send_message")
                .description(Some("Logs a queued outbound entry and writes the command for the channel's connector in one transaction; the connector's delivery reports update the entry's `delivery_status`."))
                .parameter(id_parameter())
                .parameter(
                    ParameterBuilder::new()
                        .name("Idempotency-Key")
                        .parameter_in(ParameterIn::Header)
                        .description(Some("1 to 255 visible ASCII characters naming this request: a retry with the same key gets the entry the first one logged (202, `Idempotent-Replayed: true`) and sends nothing again."))
                        .schema(Some(String::schema())),
                )
                .request_body(Some(json_body("SendRequest", true)))
                .response("202", json_response("Queued (or, for a retry with the same Idempotency-Key, queued before); Location names the log entry", record_schema("CommsEntry")))
                .response("400", problem("Malformed Idempotency-Key"))
                .response("404", problem("No such customer"))
                .response("413", problem("Request over 16 MiB"))
                .response("415", problem("Body is not JSON"))
                .response("422", problem("Invalid message: every problem with its JSON Pointer; or an Idempotency-Key used for another request"))),
        )
        .path(
            "/api/v1/inbox",
            get(operation("comms", "The unmatched inbox: entries whose sender matched no customer, latest first", "inbox")
                .parameters(Some(InboxParams::into_params(|| Some(ParameterIn::Query))))
                .response("200", json_response("A page of log entries", page_schema("CommsEntry")))
                .response("400", problem("Invalid or unknown query parameter"))),
        )
        .path(
            "/api/v1/inbox/{id}/assign",
            post(operation("comms", "Assign an unmatched entry to a customer", "inbox_assign")
                .description(Some("Adds the sender's address to the customer's contacts and assigns the other unmatched entries from that address too."))
                .parameter(id_parameter())
                .parameter(if_match())
                .request_body(Some(json_body("AssignRequest", true)))
                .response("200", json_response("Assigned; ETag of the entry set", assign_response))
                .response("404", problem("No such entry"))
                .response("409", problem("The entry is not in the unmatched inbox"))
                .response("412", problem("The entry has changed since the If-Match version"))
                .response("422", problem("No such customer"))),
        )
        .path(
            "/api/v1/inbox/{id}/dismiss",
            post(operation("comms", "Dismiss an unmatched entry (spam, not a customer)", "inbox_dismiss")
                .parameter(id_parameter())
                .parameter(if_match())
                .response("200", json_response("Dismissed", record_schema("CommsEntry")))
                .response("404", problem("No such entry"))
                .response("409", problem("The entry is not in the unmatched inbox"))
                .response("412", problem("The entry has changed since the If-Match version"))),
        )
        .path(
            "/api/v1/media/{id}/content",
            get(operation("media", "The content of a stored file, from the file store", "media_content")
                .parameter(id_parameter())
                .response(
                    "200",
                    ResponseBuilder::new()
                        .description("The bytes, with the file's Content-Type, Content-Disposition (attachment) and its SHA-256 as ETag")
                        .content("application/octet-stream", ContentBuilder::new().schema(Some(ObjectBuilder::new().schema_type(Type::String).content_media_type("application/octet-stream"))).build()),
                )
                .response("304", ResponseBuilder::new().description("Not modified (If-None-Match)"))
                .response("404", problem("No such media file, or the file store does not have it"))
                .response("409", problem("The file is not stored (pending, failed, or only metadata), or the store's bytes are not the ones stored"))
                .response("502", problem("The files connector refuses to read the file; trying again will not help"))
                .response("503", problem("The files connector does not answer, or too many files are moving at once; see Retry-After"))),
        )
}

/// Connectors, the bus and its dead letters.
fn describe_bus(paths: PathsBuilder, schemas: &mut Vec<(String, RefOr<Schema>)>) -> PathsBuilder {
    for (name, schema) in [
        ("ConnectorList", ConnectorList::schema()),
        ("BusStatus", BusStatus::schema()),
        ("DeadLetter", DeadLetter::schema()),
        ("ReplayRequest", ReplayRequest::schema()),
    ] {
        schemas.push((name.into(), schema));
    }
    ConnectorList::schemas(schemas);
    BusStatus::schemas(schemas);
    DeadLetter::schemas(schemas);
    let get = |op: OperationBuilder| utoipa::openapi::PathItem::new(HttpMethod::Get, op);
    let post = |op: OperationBuilder| utoipa::openapi::PathItem::new(HttpMethod::Post, op);
    let letter = || json_response("The dead letter", Ref::from_schema_name("DeadLetter"));
    paths
        .path(
            "/api/v1/connectors",
            get(operation("bus", "Connectors and their instances, with a status from their heartbeats", "connectors")
                .response("200", json_response("Every connector seen", Ref::from_schema_name("ConnectorList")))),
        )
        .path(
            "/api/v1/bus",
            get(operation("bus", "The bus: transport, queues, dead letters waiting and the outbox backlog", "bus_status")
                .response("200", json_response("The state of the bus", Ref::from_schema_name("BusStatus")))),
        )
        .path(
            "/api/v1/bus/dead-letters",
            get(operation("bus", "Dead letters, latest first", "dead_letters")
                .parameters(Some(DeadLetterParams::into_params(|| Some(ParameterIn::Query))))
                .response("200", json_response("A page of dead letters", page_of("DeadLetter")))
                .response("400", problem("Invalid or unknown query parameter"))),
        )
        .path(
            "/api/v1/bus/dead-letters/{id}",
            get(operation("bus", "A dead letter", "dead_letter")
                .parameter(id_parameter())
                .response("200", letter())
                .response("404", problem("No such dead letter"))),
        )
        .path(
            "/api/v1/bus/dead-letters/{id}/replay",
            post(
                operation("bus", "Put a dead letter back on its queue, with fixed data if given", "dead_letter_replay")
                    .parameter(id_parameter())
                    .request_body(Some(json_body("ReplayRequest", false)))
                    .response("200", json_response("Replayed", Ref::from_schema_name("DeadLetter")))
                    .response("404", problem("No such dead letter"))
                    .response(
                        "409",
                        problem("Already replayed or discarded, being replayed by another request, or its consumer group has no queue"),
                    )
                    .response("422", problem("Invalid replacement data"))
                    .response("503", problem("The bus cannot take the message; see Retry-After")),
            ),
        )
        .path(
            "/api/v1/bus/dead-letters/{id}/discard",
            post(
                operation("bus", "Give up on a dead letter", "dead_letter_discard")
                    .parameter(id_parameter())
                    .response("200", json_response("Discarded", Ref::from_schema_name("DeadLetter")))
                    .response("404", problem("No such dead letter"))
                    .response("409", problem("Already replayed or discarded, or being replayed")),
            ),
        )
}

/// Rule plugins and quoting.
fn describe_plugins(paths: PathsBuilder, schemas: &mut Vec<(String, RefOr<Schema>)>) -> PathsBuilder {
    use crm_plugins::{PluginSummary, Role, VersionInfo};
    for (name, schema) in
        [("PluginSummary", PluginSummary::schema()), ("VersionInfo", VersionInfo::schema()), ("PluginRole", Role::schema())]
    {
        schemas.push((name.into(), schema));
    }
    let name = || {
        ParameterBuilder::new()
            .name("name")
            .parameter_in(ParameterIn::Path)
            .required(utoipa::openapi::Required::True)
            .schema(Some(String::schema()))
    };
    let summary = |what: &str| json_response(what, Ref::from_schema_name("PluginSummary"));
    let get = |op: OperationBuilder| utoipa::openapi::PathItem::new(HttpMethod::Get, op);
    let post = |op: OperationBuilder| utoipa::openapi::PathItem::new(HttpMethod::Post, op);
    let component = RequestBodyBuilder::new()
        .required(Some(utoipa::openapi::Required::True))
        .description(Some("The component (.wasm), built for wasm32-wasip2 against a supported crm:rules version; at most 64 MiB"))
        .content(
            "application/wasm",
            ContentBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::String).format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))))
                .build(),
        )
        .build();
    let action = |verb: &str, summary_text: &str, id: &str| {
        post(
            operation("plugins", summary_text, id)
                .parameter(name())
                .response("200", summary(verb))
                .response("404", problem("No such plugin"))
                .response("409", problem("Not possible in the plugin's state (e.g. no previous version)"))
                .response("422", problem("The stored component could not be loaded")),
        )
    };
    paths
        .path(
            "/api/v1/plugins",
            get(operation("plugins", "Rule plugins, their versions, state and roles", "plugins")
                .response("200", json_response("Every plugin", ArrayBuilder::new().items(Ref::from_schema_name("PluginSummary"))))),
        )
        .path(
            "/api/v1/plugins",
            post(
                operation("plugins", "Upload a plugin version; the world and WIT version it targets are checked", "plugin_upload")
                    .parameters(Some(crate::plugins::UploadParams::into_params(|| Some(ParameterIn::Query))))
                    .request_body(Some(component))
                    .response("201", summary("The plugin, with the new version current"))
                    .response("400", problem("Bad name, version or query parameter"))
                    .response("409", problem("That version exists with other content"))
                    .response("413", problem("The component is larger than 64 MiB"))
                    .response("422", problem("The component was refused: wrong world, unsupported WIT version, forbidden imports")),
            ),
        )
        .path(
            "/api/v1/plugins/{name}",
            get(operation("plugins", "A plugin", "plugin")
                .parameter(name())
                .response("200", summary("The plugin"))
                .response("404", problem("No such plugin"))),
        )
        .path(
            "/api/v1/plugins/{name}",
            utoipa::openapi::PathItem::new(
                HttpMethod::Delete,
                operation("plugins", "Delete a plugin and its versions", "plugin_delete")
                    .parameter(name())
                    .response("204", ResponseBuilder::new().description("Deleted"))
                    .response("404", problem("No such plugin"))
                    .response("409", problem("It is the active plugin of a rule: activate another first")),
            ),
        )
        .path(
            "/api/v1/plugins/{name}/enable",
            action("Enabled", "Enable a plugin and make it active for the rules it implements", "plugin_enable"),
        )
        .path(
            "/api/v1/plugins/{name}/disable",
            action("Disabled", "Disable a plugin (an active pricing plugin disabled stops order pricing)", "plugin_disable"),
        )
        .path("/api/v1/plugins/{name}/rollback", action("Rolled back", "Make the previous version current again", "plugin_rollback"))
        .path(
            "/api/v1/orders/quote",
            post(
                operation("orders", "Price a draft order with the active pricing plugin without saving it", "order_quote")
                    .request_body(Some(json_body("OrderInput", true)))
                    .response("200", json_response("The priced order (not stored)", Ref::from_schema_name("Order")))
                    .response("422", problem("Invalid order, or the pricing rule refused it"))
                    .response("503", problem("The pricing plugin failed, is disabled, or none is active")),
            ),
        )
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
