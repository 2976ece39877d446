//! `kelp login` and `kelp logout`: which server the CLI speaks to, and a token of its own.
//!
//! Signing in with a password makes an API token named after this machine (`POST
//! /api/tokens`) and ends the password's login session: what is stored can be listed and
//! revoked like any token, and outlives no more than the operator wants.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use reqwest::Method;
use serde_json::json;

use super::admin::text;
use super::client::{DEFAULT_URL, Refusal, Server, ServerArgs, StoredLogin, segment};
use super::input::{ask_line, read_secret};

#[derive(clap::Args)]
pub struct LoginArgs {
    /// The server (default: --url or $KELP_URL, else the one signed in to before, else
    /// http://127.0.0.1:7777).
    #[arg(value_name = "URL")]
    server: Option<String>,
    /// Username (asked on the terminal when not given). The password is read from standard
    /// input. With --token (or KELP_TOKEN) that token is checked and stored instead.
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
}

pub(super) async fn login(args: LoginArgs, options: &ServerArgs) -> Result<ExitCode> {
    let stored = StoredLogin::load().ok().flatten();
    let url = args
        .server
        .or_else(|| options.url.clone())
        .or_else(|| stored.map(|l| l.url))
        .unwrap_or_else(|| DEFAULT_URL.to_owned());
    let url = url.trim().trim_end_matches('/').to_owned();

    let given = options
        .token
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let (token, token_id) = match given {
        Some(token) => (token.to_owned(), None),
        None => {
            let username = match args.user {
                Some(user) => user,
                None => ask_line("username: ", "--user NAME")?,
            };
            let password = read_secret(&format!("password for {username} at {url}: "))?;
            let (token, id) = password_login(&url, &username, &password).await?;
            (token, Some(id))
        }
    };
    let server = Server::new(url.clone(), token.clone())?;
    let me = server.get("/api/me").await.context("checking the token")?;
    let path = StoredLogin {
        url: url.clone(),
        token,
        token_id,
    }
    .save()?;
    println!(
        "signed in to {url} as {} ({}); the token is kept in {}",
        text(&me["username"]),
        text(&me["role"]),
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Signs in with a password and trades the login session for an API token of the CLI's own:
/// `(token, token id)`.
async fn password_login(url: &str, username: &str, password: &str) -> Result<(String, String)> {
    // The login session's token is only used for the next two requests.
    let anonymous = Server::new(url.to_owned(), String::new())?;
    let response = anonymous
        .request(Method::POST, "/api/auth/login")
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .map_err(|e| anonymous.unreachable(e))?;
    if !response.status().is_success() {
        let refusal = Refusal::read(response).await;
        bail!("signing in to {url} failed: {}", refusal.message);
    }
    let body: serde_json::Value = response.json().await.context("reading the login answer")?;
    let session = Server::new(url.to_owned(), text(&body["token"]).to_owned())?;
    let created = session
        .call(
            Method::POST,
            "/api/tokens",
            Some(&json!({"name": token_name()})),
        )
        .await
        .context("creating an API token for the CLI")?;
    // Best effort: the session would expire anyway, and the API token is already made.
    let _ = session.call(Method::POST, "/api/auth/logout", None).await;
    Ok((
        text(&created["token"]).to_owned(),
        text(&created["id"]).to_owned(),
    ))
}

/// `kelp CLI on HOSTNAME`: how the token shows in `GET /api/tokens`.
fn token_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().chars().take(60).collect::<String>())
        .filter(|h| !h.is_empty());
    match host {
        Some(host) => format!("kelp CLI on {host}"),
        None => "kelp CLI".to_owned(),
    }
}

pub(super) async fn logout() -> Result<ExitCode> {
    let login = match StoredLogin::load() {
        Ok(Some(login)) => login,
        Ok(None) => {
            println!("not signed in");
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => {
            // Nothing in it can be revoked; what is left to do is forget it.
            StoredLogin::remove()?;
            println!("removed an unreadable login ({e:#})");
            return Ok(ExitCode::SUCCESS);
        }
    };
    if let Some(id) = &login.token_id {
        let server = Server::new(login.url.clone(), login.token.clone())?;
        if let Err(e) = server
            .call(
                Method::DELETE,
                &format!("/api/tokens/{}", segment(id)),
                None,
            )
            .await
        {
            // Forgotten here anyway; say so, since the token still works until revoked.
            eprintln!(
                "warning: could not revoke the token at {}: {e:#} (revoke it with DELETE \
                 /api/tokens/{id})",
                login.url
            );
        }
    }
    StoredLogin::remove()?;
    println!("signed out of {}", login.url);
    Ok(ExitCode::SUCCESS)
}
