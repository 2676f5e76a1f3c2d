//! `crm plugin check` and `crm plugin test`: the rule developer's tools. `check` says which
//! world and WIT version a component implements and what it imports (or why it is refused);
//! `test` runs it on a file of cases with expected results, and with `--dry-run` against the
//! orders or customers in the configured store, showing what would change before it is
//! activated. Nothing is written anywhere.

use crate::config::Settings;
use anyhow::Context;
use clap::Subcommand;
use crm_domain::contact::ContactType;
use crm_domain::customer::Customer;
use crm_domain::matching::{Channel, Sender};
use crm_domain::order::{Order, OrderStatus};
use crm_plugins::kit::{CaseFile, run_cases};
use crm_plugins::pricing::PriceRequest;
use crm_plugins::{LoadedPlugin, PluginHost};
use crm_store::{ListQuery, Resource, Store};
use std::io::Write;
use std::path::PathBuf;

/// `crm plugin …`
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Show which world and crm:rules version a component implements and what it imports.
    Check {
        /// The component (.wasm).
        file: PathBuf,
    },
    /// Run a component on a file of cases with expected results (JSON; see
    /// plugins/template/README.md) and/or, with --dry-run, on the store's orders or customers.
    Test {
        /// The component (.wasm).
        file: PathBuf,
        /// The cases file.
        cases: Option<PathBuf>,
        /// Also price every order (pricing plugins) or match every customer's contacts
        /// (matchers) in the configured database, and show what would change.
        #[arg(long)]
        dry_run: bool,
    },
}

fn host(settings: &Settings) -> anyhow::Result<PluginHost> {
    PluginHost::new(crm_plugins::HostConfig { cache_dir: None, ..settings.plugin_host() }).map_err(anyhow::Error::msg)
}

fn load(settings: &Settings, file: &std::path::Path) -> anyhow::Result<LoadedPlugin> {
    let name = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "plugin".into());
    host(settings)?.load_file(&name, "local", file).map_err(|e| anyhow::anyhow!("{} was refused: {e}", file.display()))
}

/// Runs a `crm plugin` command, writing its report to `out`.
pub async fn run(settings: &Settings, command: PluginCommand, out: &mut impl Write) -> anyhow::Result<()> {
    match command {
        PluginCommand::Check { file } => {
            let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let info = host(settings)?.inspect(&bytes).map_err(|e| anyhow::anyhow!("{} was refused: {e}", file.display()))?;
            writeln!(out, "{}: {} of crm:rules@{}", file.display(), info.world.as_str(), info.wit_version)?;
            writeln!(out, "sha256 {}  {} bytes", info.hash, info.size_bytes)?;
            writeln!(out, "exports: {}", info.exports.join(", "))?;
            if info.imports.is_empty() {
                writeln!(out, "imports: none")?;
            } else {
                writeln!(out, "imports (all denied or contained by the sandbox):")?;
                for import in &info.imports {
                    writeln!(out, "  {import}")?;
                }
            }
            let plugin = load(settings, &file)?;
            writeln!(out, "loads and instantiates: ok ({})", plugin.id())?;
            Ok(())
        }
        PluginCommand::Test { file, cases, dry_run } => {
            if cases.is_none() && !dry_run {
                anyhow::bail!("give a cases file, --dry-run, or both");
            }
            let plugin = load(settings, &file)?;
            writeln!(out, "{}: {} of crm:rules@{}", file.display(), plugin.info().world.as_str(), plugin.info().wit_version)?;
            let mut failed = 0;
            if let Some(cases) = cases {
                let text = std::fs::read_to_string(&cases).with_context(|| format!("cannot read {}", cases.display()))?;
                let cases: CaseFile = serde_json::from_str(&text).with_context(|| format!("{} is not a cases file", cases.display()))?;
                let results = run_cases(&plugin, &cases);
                for r in &results {
                    writeln!(out, "{} {}: {}", if r.passed { "ok  " } else { "FAIL" }, r.name, r.detail)?;
                }
                failed = results.iter().filter(|r| !r.passed).count();
                writeln!(out, "{} passed, {} failed", results.len() - failed, failed)?;
            }
            if dry_run {
                let store = Store::connect(&settings.store()).await.context("cannot open the database")?;
                let result = dry_run_on(&store, &plugin, out).await;
                store.close().await;
                result?;
            }
            if failed > 0 {
                anyhow::bail!("{failed} case(s) failed");
            }
            Ok(())
        }
    }
}

async fn every<R: Resource>(store: &Store) -> anyhow::Result<Vec<crm_domain::Record<R>>>
where
    R::Filter: Default,
{
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let query = ListQuery { cursor, limit: Some(200), ..ListQuery::default() };
        let page = store.list::<R>(&query).await?;
        all.extend(page.items);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(all),
        }
    }
}

async fn dry_run_on(store: &Store, plugin: &LoadedPlugin, out: &mut impl Write) -> anyhow::Result<()> {
    if plugin.info().world.prices() {
        let orders = every::<Order>(store).await?;
        let (mut changed, mut refused) = (0, 0);
        for record in &orders {
            let order = &record.data;
            let status = if order.status == OrderStatus::Draft { "draft, would be repriced" } else { "frozen, keeps its price" };
            match plugin.price(&PriceRequest::from_order(order)) {
                Ok(quote) if quote.total != order.total || quote.tax != order.tax_total => {
                    changed += 1;
                    writeln!(out, "{} ({status}): total {} → {}", order.order_number, order.total, quote.total)?;
                }
                Ok(_) => {}
                Err(err) => {
                    refused += 1;
                    writeln!(out, "{} ({status}): not priced: {err}", order.order_number)?;
                }
            }
        }
        writeln!(out, "dry run over {} orders: {changed} would change, {refused} could not be priced", orders.len())?;
    }
    if plugin.info().world.matches() {
        let customers = every::<Customer>(store).await?;
        let (mut contacts, mut missed) = (0, 0);
        for record in &customers {
            for contact in &record.data.contacts {
                let channel = match contact.kind {
                    ContactType::Email => Channel::Email,
                    ContactType::Phone => Channel::Phone,
                    ContactType::Whatsapp => Channel::Whatsapp,
                    ContactType::Other => continue,
                };
                contacts += 1;
                let sender = Sender { channel, address: contact.value.clone(), display_name: Some(record.data.name.clone()) };
                match plugin.match_keys(&sender) {
                    Ok(keys) if keys.iter().any(|k| k.value == contact.normalized) => {}
                    Ok(keys) => {
                        missed += 1;
                        let keys: Vec<&str> = keys.iter().map(|k| k.value.as_str()).collect();
                        writeln!(out, "{} ({}): `{}` would not find them (keys: {keys:?})", record.data.name, record.id, contact.value)?;
                    }
                    Err(err) => {
                        missed += 1;
                        writeln!(out, "{} ({}): `{}`: {err}", record.data.name, record.id, contact.value)?;
                    }
                }
            }
        }
        writeln!(out, "dry run over {} customers: {missed} of {contacts} contacts would not lead back to their customer", customers.len())?;
    }
    Ok(())
}
