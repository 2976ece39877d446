//! User accounts from the command line: through the server's API once there is one to sign
//! in to, and directly on the data directory's database before that (the first admin, made
//! before the server's first start).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Result, anyhow, bail};
use reqwest::Method;
use serde_json::json;

use super::UserCommand;
use super::admin::text;
use super::client::Server;
use super::input::read_secret;
use crate::api::auth::{validate_password, validate_username};
use crate::config::Config;
use crate::store::Db;
use crate::store::users::NewUser;

/// The checked fields of `user add`; the password is read from standard input.
struct NewAccount {
    username: String,
    display_name: String,
    password: String,
    role: &'static str,
}

fn read_account(username: String, admin: bool, display_name: Option<String>) -> Result<NewAccount> {
    validate_username(&username).map_err(|e| anyhow!(e.message))?;
    let display_name = display_name
        .as_deref()
        .map(str::trim)
        .unwrap_or(&username)
        .to_owned();
    if display_name.is_empty() || display_name.chars().count() > 100 {
        bail!("--display-name must be 1-100 characters");
    }
    let password = read_secret(&format!("password for {username}: "))?;
    validate_password(&password).map_err(|e| anyhow!(e.message))?;
    Ok(NewAccount {
        username,
        display_name,
        password,
        role: if admin { "admin" } else { "user" },
    })
}

/// `user add` on the data directory's database: no server needed.
pub(super) async fn add_local(
    cmd: UserCommand,
    config: &Config,
    data_dir: &Path,
) -> Result<ExitCode> {
    let UserCommand::Add {
        username,
        admin,
        display_name,
    } = cmd
    else {
        unreachable!("only `user add` works without a server")
    };
    let account = read_account(username, admin, display_name)?;
    let hash = crate::auth::hash_password(&account.password)?;
    if config.database_url.is_none() && crate::config::create_data_dir(data_dir)? {
        eprintln!("created the data directory {}", data_dir.display());
    }
    // Only the database is needed: no plugin runtime to start for this.
    let db = match &config.database_url {
        Some(url) => Db::connect(url).await?,
        None => Db::open_sqlite_in(data_dir).await?,
    };
    let created = db
        .create_user(NewUser {
            username: &account.username,
            display_name: &account.display_name,
            password_hash: &hash,
            role: account.role,
        })
        .await?;
    if created.is_none() {
        bail!("username `{}` is taken", account.username);
    }
    println!("created {} {}", account.role, account.username);
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn user(cmd: UserCommand, server: &Server) -> Result<ExitCode> {
    match cmd {
        UserCommand::Add {
            username,
            admin,
            display_name,
        } => {
            let account = read_account(username, admin, display_name)?;
            server
                .call(
                    Method::POST,
                    "/api/admin/users",
                    Some(&json!({
                        "username": account.username,
                        "password": account.password,
                        "display_name": account.display_name,
                        "role": account.role,
                    })),
                )
                .await?;
            println!("created {} {}", account.role, account.username);
        }
        UserCommand::List => {
            for user in server.get_all("/api/admin/users").await? {
                let inactive = if user["active"] == false {
                    " (deactivated)"
                } else {
                    ""
                };
                println!(
                    "{} [{}] — {}{inactive}",
                    text(&user["username"]),
                    text(&user["role"]),
                    text(&user["display_name"])
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
