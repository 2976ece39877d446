//! User accounts from the command line, directly on the data directory's database (so the
//! first admin can be made before the server ever runs).

use std::io::{IsTerminal, Read};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Result, anyhow, bail};

use super::UserCommand;
use crate::api::auth::{validate_password, validate_username};
use crate::config::Config;
use crate::store::Db;
use crate::store::users::NewUser;

pub(super) async fn user(cmd: UserCommand, config: &Config, data_dir: &Path) -> Result<ExitCode> {
    match cmd {
        UserCommand::Add {
            username,
            admin,
            display_name,
        } => {
            validate_username(&username).map_err(|e| anyhow!(e.message))?;
            let display_name = display_name.as_deref().map(str::trim).unwrap_or(&username);
            if display_name.is_empty() || display_name.chars().count() > 100 {
                bail!("--display-name must be 1-100 characters");
            }
            let mut password = String::new();
            if std::io::stdin().is_terminal() {
                eprint!("password for {username}: ");
            }
            std::io::stdin().read_to_string(&mut password)?;
            let password = password.trim_end_matches(['\n', '\r']);
            validate_password(password).map_err(|e| anyhow!(e.message))?;
            let hash = crate::auth::hash_password(password)?;
            // Only the database is needed: no plugin runtime to start for this.
            let db = match &config.database_url {
                Some(url) => Db::connect(url).await?,
                None => Db::open_sqlite_in(data_dir).await?,
            };
            let role = if admin { "admin" } else { "user" };
            let created = db
                .create_user(NewUser {
                    username: &username,
                    display_name,
                    password_hash: &hash,
                    role,
                })
                .await?;
            if created.is_none() {
                bail!("username `{username}` is taken");
            }
            println!("created {role} {username}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
