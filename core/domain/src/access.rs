//! Who may do what: roles, the resources and actions permissions are made of, and the
//! permission table itself, kept as data so that it can be documented, shown at `/api/v1/me`,
//! and tested route by route.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A console user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including users, API keys, plugins and connectors.
    Admin,
    /// All CRM data, reassigning work, reports.
    Manager,
    /// Customers and orders assigned to them, plus creating new ones; reads the catalogue.
    Agent,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 3] = [Role::Admin, Role::Manager, Role::Agent];

    /// The name used on the wire and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Manager => "manager",
            Role::Agent => "agent",
        }
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| format!("`{s}` is not a role: use admin, manager or agent"))
    }
}

/// What a permission is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Area {
    /// Customers, their contacts, notes and history.
    Customers,
    /// The product catalogue and stock.
    Products,
    /// Orders.
    Orders,
    /// Console users.
    Users,
    /// Service credentials for connectors and scripts.
    ApiKeys,
    /// The audit trail.
    Audit,
    /// Reports over all data.
    Reports,
    /// Rule plugins.
    Plugins,
    /// Channel connectors and the bus.
    Connectors,
}

impl Area {
    /// Every area.
    pub const ALL: [Area; 9] = [
        Area::Customers,
        Area::Products,
        Area::Orders,
        Area::Users,
        Area::ApiKeys,
        Area::Audit,
        Area::Reports,
        Area::Plugins,
        Area::Connectors,
    ];

    /// The name used in permission strings.
    pub fn as_str(self) -> &'static str {
        match self {
            Area::Customers => "customers",
            Area::Products => "products",
            Area::Orders => "orders",
            Area::Users => "users",
            Area::ApiKeys => "api_keys",
            Area::Audit => "audit",
            Area::Reports => "reports",
            Area::Plugins => "plugins",
            Area::Connectors => "connectors",
        }
    }
}

/// What is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Read.
    View,
    /// Create and change.
    Edit,
    /// Delete and restore.
    Delete,
    /// Administer: reassign, manage.
    Admin,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 4] = [Action::View, Action::Edit, Action::Delete, Action::Admin];

    /// The name used in permission strings.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::View => "view",
            Action::Edit => "edit",
            Action::Delete => "delete",
            Action::Admin => "admin",
        }
    }
}

/// Which records of an area a permission covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Every record.
    All,
    /// Records assigned to the user (and new ones they create).
    Assigned,
}

/// One permission: an action on an area, over some records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Permission {
    /// The area.
    pub area: Area,
    /// The action.
    pub action: Action,
    /// Which records.
    pub scope: Scope,
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.area.as_str(), self.action.as_str())?;
        if self.scope == Scope::Assigned {
            f.write_str(" (assigned)")?;
        }
        Ok(())
    }
}

const fn p(area: Area, action: Action, scope: Scope) -> Permission {
    Permission { area, action, scope }
}

use Action::{Admin as A, Delete as D, Edit as E, View as V};
use Area::*;
use Scope::{All, Assigned};

const MANAGER: &[Permission] = &[
    p(Customers, V, All),
    p(Customers, E, All),
    p(Customers, D, All),
    p(Customers, A, All),
    p(Products, V, All),
    p(Products, E, All),
    p(Products, D, All),
    p(Orders, V, All),
    p(Orders, E, All),
    p(Orders, D, All),
    p(Orders, A, All),
    p(Reports, V, All),
    p(Users, V, All),
];

const AGENT: &[Permission] =
    &[p(Customers, V, Assigned), p(Customers, E, Assigned), p(Products, V, All), p(Orders, V, Assigned), p(Orders, E, Assigned)];

/// The permission table: what each role may do. Admins may do everything, on every record.
pub fn permissions(role: Role) -> Vec<Permission> {
    match role {
        Role::Admin => Area::ALL.iter().flat_map(|&area| Action::ALL.iter().map(move |&action| p(area, action, All))).collect(),
        Role::Manager => MANAGER.to_vec(),
        Role::Agent => AGENT.to_vec(),
    }
}

/// The scope a role has for an action on an area, if any.
pub fn scope_of(role: Role, area: Area, action: Action) -> Option<Scope> {
    permissions(role).into_iter().find(|p| p.area == area && p.action == action).map(|p| p.scope)
}

/// A service credential's grant, written `area:action` (e.g. `customers:view`); service
/// credentials always act on all records of the area.
pub fn parse_grant(text: &str) -> Result<(Area, Action), String> {
    let (area, action) = text.split_once(':').ok_or_else(|| format!("`{text}` is not a scope such as customers:view"))?;
    let area = Area::ALL.into_iter().find(|a| a.as_str() == area).ok_or_else(|| format!("`{area}` is not an area"))?;
    let action = Action::ALL.into_iter().find(|a| a.as_str() == action).ok_or_else(|| format!("`{action}` is not an action"))?;
    Ok((area, action))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admins_may_do_everything() {
        for area in Area::ALL {
            for action in Action::ALL {
                assert_eq!(scope_of(Role::Admin, area, action), Some(Scope::All));
            }
        }
    }

    #[test]
    fn agents_see_only_their_own_and_never_administer() {
        assert_eq!(scope_of(Role::Agent, Customers, V), Some(Scope::Assigned));
        assert_eq!(scope_of(Role::Agent, Customers, D), None);
        assert_eq!(scope_of(Role::Agent, Customers, A), None);
        assert_eq!(scope_of(Role::Agent, Products, E), None);
        assert_eq!(scope_of(Role::Agent, Users, V), None);
    }

    #[test]
    fn managers_have_all_crm_data_but_not_users_or_plugins() {
        assert_eq!(scope_of(Role::Manager, Orders, A), Some(Scope::All));
        assert_eq!(scope_of(Role::Manager, Users, E), None);
        assert_eq!(scope_of(Role::Manager, Plugins, V), None);
        assert_eq!(scope_of(Role::Manager, ApiKeys, V), None);
    }

    #[test]
    fn grants_parse() {
        assert_eq!(parse_grant("orders:edit"), Ok((Orders, E)));
        assert!(parse_grant("orders").is_err());
        assert!(parse_grant("spaceships:view").is_err());
        assert_eq!("Manager".parse::<Role>(), Ok(Role::Manager));
    }
}
