//! `crm user …`: manage console users from the command line (create the first admin, reset a
//! forgotten password, lock someone out). Changes are audited as made by the system.

use anyhow::{Context, bail};
use clap::Subcommand;
use crm_domain::Record;
use crm_domain::access::Role;
use crm_domain::user::{User, UserInput, check_password};
use crm_store::{ListQuery, SortDirection, Store, UserFilter};
use std::io::{BufRead, Write};

/// User management commands.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user. The password is read from standard input with --password-stdin, or
    /// generated and printed once.
    Create {
        /// Login e-mail.
        #[arg(long)]
        email: String,
        /// Name shown in the console.
        #[arg(long)]
        name: String,
        /// admin, manager or agent.
        #[arg(long)]
        role: Role,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    List,
    /// Change a user's role.
    SetRole {
        /// The user's e-mail.
        email: String,
        /// admin, manager or agent.
        role: Role,
    },
    /// Disable a user: they are locked out at once and their sessions end.
    Disable {
        /// The user's e-mail.
        email: String,
    },
    /// Enable a disabled user again.
    Enable {
        /// The user's e-mail.
        email: String,
    },
    /// Set a new password (ends the user's sessions).
    ResetPassword {
        /// The user's e-mail.
        email: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
}

fn read_or_generate_password(from_stdin: bool, out: &mut impl Write) -> anyhow::Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).context("cannot read the password from standard input")?;
        let password = line.trim_end_matches(['\r', '\n']).to_owned();
        check_password(&password).map_err(|e| anyhow::anyhow!("password {e}"))?;
        return Ok(password);
    }
    let password = crm_api::generate_password();
    writeln!(out, "generated password (shown once): {password}")?;
    Ok(password)
}

async fn find(store: &Store, email: &str) -> anyhow::Result<Record<User>> {
    match store.user_credentials(email).await? {
        Some((user, _)) => Ok(user),
        None => bail!("no user with e-mail {email}"),
    }
}

/// Runs a user command, writing its report to `out`.
pub async fn run(command: UserCommand, store: &Store, auth: &crm_api::Auth, out: &mut impl Write) -> anyhow::Result<()> {
    match command {
        UserCommand::Create { email, name, role, password_stdin } => {
            let user = UserInput { email: Some(email), display_name: Some(name), role: Some(role), active: Some(true) }
                .parse()
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let password = read_or_generate_password(password_stdin, out)?;
            let hash = auth.hash_password(password).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            let record = store.create_user(user, Some(hash)).await?;
            writeln!(out, "created {} {} ({})", record.data.role.as_str(), record.data.email, record.id)?;
        }
        UserCommand::List => {
            let mut cursor = None;
            loop {
                let query = ListQuery {
                    filter: UserFilter::default(),
                    sort: Some("email".into()),
                    direction: SortDirection::Asc,
                    cursor,
                    limit: Some(200),
                    ..ListQuery::default()
                };
                let page = store.list::<User>(&query).await?;
                for user in &page.items {
                    let state = if user.data.active { "active" } else { "disabled" };
                    writeln!(out, "{}\t{}\t{}\t{}\t{}", user.id, user.data.email, user.data.role.as_str(), state, user.data.display_name)?;
                }
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
        }
        UserCommand::SetRole { email, role } => {
            let user = find(store, &email).await?;
            let record = store.update(user.id, Some(user.version), User { role, ..user.data }).await?;
            writeln!(out, "{} is now {}", record.data.email, record.data.role.as_str())?;
        }
        UserCommand::Disable { email } => {
            let user = find(store, &email).await?;
            let record = store.update(user.id, Some(user.version), User { active: false, ..user.data }).await?;
            writeln!(out, "{} is disabled; their sessions have ended", record.data.email)?;
        }
        UserCommand::Enable { email } => {
            let user = find(store, &email).await?;
            let record = store.update(user.id, Some(user.version), User { active: true, ..user.data }).await?;
            writeln!(out, "{} is enabled", record.data.email)?;
        }
        UserCommand::ResetPassword { email, password_stdin } => {
            let user = find(store, &email).await?;
            let password = read_or_generate_password(password_stdin, out)?;
            let hash = auth.hash_password(password).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            store.set_password(user.id, hash).await?;
            writeln!(out, "password of {} set; their sessions have ended", user.data.email)?;
        }
    }
    Ok(())
}
