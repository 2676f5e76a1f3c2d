//! Customers: who they are, how to reach them, what they own and where they stand in the sales
//! process. [`CustomerInput`] is what clients send; [`Customer`] is the validated data the store
//! keeps and the API returns.

use crate::contact::{Contact, ContactInput, ContactType, Region, parse_contacts};
use crate::error::{Violations, optional_text, required_text};
use crate::fold_for_search;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Fields of a customer that clients may send back but the server computes.
pub const READ_ONLY: &[&str] = &["/contacts/*/normalized"];

/// Where a customer stands in the sales process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CustomerStatus {
    /// Known, not yet qualified.
    #[default]
    Lead,
    /// Qualified, being worked on.
    Prospect,
    /// Buying or owning our products.
    Active,
    /// No longer active.
    Inactive,
}

impl CustomerStatus {
    /// The name used on the wire and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lead => "lead",
            Self::Prospect => "prospect",
            Self::Active => "active",
            Self::Inactive => "inactive",
        }
    }
}

/// A dated note about a customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Note {
    /// The note.
    pub text: String,
    /// Who wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// When; defaults to the time the note was first saved.
    #[serde(default)]
    pub at: Option<DateTime<Utc>>,
}

/// Where a customer is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Location {
    /// City or village.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// ISO 3166 alpha-2 country code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// Region, prefecture or state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// Something a customer owns, e.g. a bell controller with its serial numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum OwnedItem {
    /// A device registered with the console.
    ConsoleDevice {
        /// The device's id in the console.
        device_id: String,
        /// A human label ("north tower controller").
        #[serde(default, skip_serializing_if = "Option::is_none")]
        label: Option<String>,
    },
    /// Units of one of our products.
    Product {
        /// The product.
        product_id: Uuid,
        /// The product's name when recorded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        product_name: Option<String>,
        /// How many units.
        #[serde(default = "one")]
        quantity: i64,
        /// Serial numbers of the units.
        #[serde(default)]
        serial_numbers: Vec<String>,
    },
    /// Anything else, described in words.
    Freetext {
        /// What it is.
        description: String,
        /// Its serial number, if it has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        serial_number: Option<String>,
        /// Anything worth knowing.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        notes: Option<String>,
    },
}

fn one() -> i64 {
    1
}

/// A customer as the store keeps it and the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Customer {
    /// Person's or parish's name.
    pub name: String,
    /// Organisation (a parish, a metropolis, a company).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    /// Ways to reach the customer.
    pub contacts: Vec<Contact>,
    /// Dated notes.
    pub notes: Vec<Note>,
    /// Where the customer is.
    pub location: Location,
    /// Preferred language (BCP 47), "el" by default.
    pub language: String,
    /// Tags, lower case, unique.
    pub tags: Vec<String>,
    /// What the customer owns.
    pub owned_items: Vec<OwnedItem>,
    /// Console users linked to this customer.
    pub linked_user_ids: Vec<Uuid>,
    /// The customer's folder in the file store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nextcloud_folder: Option<String>,
    /// Sales status.
    pub status: CustomerStatus,
    /// The user responsible for the customer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assigned_to: Option<Uuid>,
    /// Whether the customer has been contacted.
    pub contacted: bool,
    /// When to follow up next.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_follow_up_at: Option<DateTime<Utc>>,
}

/// A customer as a client sends it (create and full replace).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerInput {
    /// Required.
    #[serde(default)]
    pub name: Option<String>,
    /// Organisation.
    #[serde(default)]
    pub organization: Option<String>,
    /// Contacts; phone and WhatsApp numbers without a country code are read in the default
    /// region.
    #[serde(default)]
    pub contacts: Vec<ContactInput>,
    /// Notes.
    #[serde(default)]
    pub notes: Vec<Note>,
    /// Location.
    #[serde(default)]
    pub location: Option<Location>,
    /// Language, "el" when absent.
    #[serde(default)]
    pub language: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Owned items.
    #[serde(default)]
    pub owned_items: Vec<OwnedItem>,
    /// Linked console users.
    #[serde(default)]
    pub linked_user_ids: Vec<Uuid>,
    /// File store folder.
    #[serde(default)]
    pub nextcloud_folder: Option<String>,
    /// Status, "lead" when absent.
    #[serde(default)]
    pub status: Option<CustomerStatus>,
    /// Responsible user.
    #[serde(default)]
    pub assigned_to: Option<Uuid>,
    /// Contacted yet; false when absent.
    #[serde(default)]
    pub contacted: Option<bool>,
    /// Next follow-up.
    #[serde(default)]
    pub next_follow_up_at: Option<DateTime<Utc>>,
}

impl CustomerInput {
    /// Validates and normalises the input. `now` dates notes that come without a date.
    pub fn parse(self, region: Region, now: DateTime<Utc>) -> Result<Customer, Violations> {
        let mut errors = Violations::default();
        let name = errors.check("/name", required_text(self.name.as_deref().unwrap_or(""), 200));
        let organization = errors.check("/organization", optional_text(self.organization.as_deref().unwrap_or(""), 200)).flatten();
        let contacts = parse_contacts(self.contacts, region, "/contacts", &mut errors);
        let notes = self
            .notes
            .into_iter()
            .enumerate()
            .filter_map(|(i, note)| {
                let text = errors.check(format!("/notes/{i}/text"), required_text(&note.text, 20_000))?;
                let by = errors.check(format!("/notes/{i}/by"), optional_text(note.by.as_deref().unwrap_or(""), 200)).flatten();
                let at = errors.check(format!("/notes/{i}/at"), crate::storable_time(note.at))?;
                Some(Note { text, by, at: Some(at.unwrap_or(now)) })
            })
            .collect();
        let location = self.location.unwrap_or_default();
        let location = Location {
            city: errors.check("/location/city", optional_text(location.city.as_deref().unwrap_or(""), 200)).flatten(),
            country: errors.check("/location/country", parse_country(location.country.as_deref())).flatten(),
            region: errors.check("/location/region", optional_text(location.region.as_deref().unwrap_or(""), 200)).flatten(),
        };
        let language = errors.check("/language", parse_language(self.language.as_deref().unwrap_or("el")));
        let mut tags: Vec<String> = Vec::new();
        for (i, tag) in self.tags.iter().enumerate() {
            if let Some(tag) = errors.check(format!("/tags/{i}"), required_text(tag, 50)) {
                let tag = tag.to_lowercase();
                if !tags.contains(&tag) {
                    tags.push(tag);
                }
            }
        }
        let owned_items = self
            .owned_items
            .into_iter()
            .enumerate()
            .filter_map(|(i, item)| errors.check(format!("/owned_items/{i}"), parse_owned_item(item)))
            .collect();
        let nextcloud_folder =
            errors.check("/nextcloud_folder", optional_text(self.nextcloud_folder.as_deref().unwrap_or(""), 1_000)).flatten();
        let next_follow_up_at = errors.check("/next_follow_up_at", crate::storable_time(self.next_follow_up_at)).flatten();
        errors.finish(|| Customer {
            name: name.unwrap_or_default(),
            organization,
            contacts,
            notes,
            location,
            language: language.unwrap_or_default(),
            tags,
            owned_items,
            linked_user_ids: dedup(self.linked_user_ids),
            nextcloud_folder,
            status: self.status.unwrap_or_default(),
            assigned_to: self.assigned_to,
            contacted: self.contacted.unwrap_or(false),
            next_follow_up_at,
        })
    }
}

impl Customer {
    /// The text the search index holds for this customer: name, organisation and every contact
    /// value as typed and canonical, plus the digits of phone numbers, all folded.
    pub fn search_text(&self) -> String {
        let mut parts: Vec<&str> = vec![&self.name];
        parts.extend(self.organization.as_deref());
        for contact in &self.contacts {
            parts.push(&contact.value);
            parts.push(&contact.normalized);
            if matches!(contact.kind, ContactType::Phone | ContactType::Whatsapp) {
                parts.push(contact.normalized.trim_start_matches('+'));
            }
        }
        fold_for_search(&parts.join(" "))
    }
}

fn dedup(ids: Vec<Uuid>) -> Vec<Uuid> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if !out.contains(&id) {
            out.push(id);
        }
    }
    out
}

fn parse_country(code: Option<&str>) -> Result<Option<String>, String> {
    match code.map(str::trim).filter(|c| !c.is_empty()) {
        None => Ok(None),
        Some(code) => Region::parse(code).map(|r| Some(r.to_string())),
    }
}

/// A BCP 47 tag of the simple kind: a 2-3 letter language and optional subtags.
fn parse_language(tag: &str) -> Result<String, String> {
    let tag = tag.trim();
    let mut parts = tag.split('-');
    let language = parts.next().unwrap_or("");
    let language_ok = (2..=3).contains(&language.len()) && language.bytes().all(|b| b.is_ascii_alphabetic());
    let subtags_ok = parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()));
    if language_ok && subtags_ok { Ok(tag.to_owned()) } else { Err(format!("`{tag}` is not a language tag such as el, en or de-AT")) }
}

fn parse_owned_item(item: OwnedItem) -> Result<OwnedItem, String> {
    let serials = |list: Vec<String>| -> Result<Vec<String>, String> {
        list.into_iter().map(|s| required_text(&s, 100).map_err(|e| format!("serial number {e}"))).collect()
    };
    Ok(match item {
        OwnedItem::ConsoleDevice { device_id, label } => OwnedItem::ConsoleDevice {
            device_id: required_text(&device_id, 200).map_err(|e| format!("device_id {e}"))?,
            label: optional_text(label.as_deref().unwrap_or(""), 200)?,
        },
        OwnedItem::Product { product_id, product_name, quantity, serial_numbers } => {
            if quantity < 1 {
                return Err("quantity must be at least 1".into());
            }
            OwnedItem::Product {
                product_id,
                product_name: optional_text(product_name.as_deref().unwrap_or(""), 200)?,
                quantity,
                serial_numbers: serials(serial_numbers)?,
            }
        }
        OwnedItem::Freetext { description, serial_number, notes } => OwnedItem::Freetext {
            description: required_text(&description, 2_000).map_err(|e| format!("description {e}"))?,
            serial_number: optional_text(serial_number.as_deref().unwrap_or(""), 100)?,
            notes: optional_text(notes.as_deref().unwrap_or(""), 20_000)?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: serde_json::Value) -> Result<Customer, Violations> {
        serde_json::from_value::<CustomerInput>(value).unwrap().parse(Region::GR, Utc::now())
    }

    #[test]
    fn defaults_and_normalisation() {
        let c = parse(json!({"name": "  Στέλιος Μπιμπης ", "tags": ["Bells", "bells", "VIP"], "contacts": [{"type": "phone", "value": "694 123 4567"}]})).unwrap();
        assert_eq!(c.name, "Στέλιος Μπιμπης");
        assert_eq!(c.language, "el");
        assert_eq!(c.status, CustomerStatus::Lead);
        assert_eq!(c.tags, ["bells", "vip"]);
        assert_eq!(c.contacts[0].value, "694 123 4567");
        assert_eq!(c.contacts[0].normalized, "+306941234567");
        assert!(c.search_text().contains("306941234567"));
        assert!(c.search_text().contains("στελιοσ μπιμπησ"));
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let errors = parse(json!({
            "name": " ",
            "language": "greek!",
            "location": {"country": "Hellas"},
            "contacts": [{"type": "email", "value": "nope"}],
            "owned_items": [{"type": "product", "product_id": "0190a0b0-0000-7000-8000-000000000000", "quantity": 0}],
            "notes": [{"text": ""}]
        }))
        .unwrap_err();
        let pointers: Vec<_> = errors.0.iter().map(|e| e.pointer.as_str()).collect();
        assert_eq!(pointers, ["/name", "/contacts/0/value", "/notes/0/text", "/location/country", "/language", "/owned_items/0"]);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_value::<CustomerInput>(json!({"name": "x", "organisation": "typo"})).unwrap_err();
        assert!(err.to_string().contains("organisation"), "{err}");
    }
}
