//! The `kelp` command: `serve`, plugin authoring (`plugin new|build`), plugin administration
//! (`plugin install|list|info|remove|enable|disable|secret`), `tool call|list` and `chat`.

mod admin;
mod authoring;
mod chat;
mod users;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kelp",
    version,
    about = "Self-hosted AI agent host with sandboxed WebAssembly plugins"
)]
struct Cli {
    /// Data directory (default: $KELP_DATA_DIR, else ~/.local/share/kelp).
    #[arg(long, global = true, env = "KELP_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Configuration file (default: config.toml in the data directory, if present).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (HTTP API and plugin runtime).
    Serve {
        /// Directory of `.kelp` packages installed at start if not installed yet (first-party
        /// plugins; default: $KELP_BUNDLED_PLUGINS).
        #[arg(long, env = "KELP_BUNDLED_PLUGINS")]
        bundled: Option<PathBuf>,
    },
    /// Write, build and manage plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// List and call tools.
    #[command(subcommand)]
    Tool(ToolCommand),
    /// Manage user accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Chat with an agent on a running server; one line of input is one message.
    Chat(chat::ChatArgs),
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user; the password is read from standard input. The first admin can be made
    /// this way instead of `POST /api/auth/setup`.
    Add {
        /// 1–64 characters of a-z, 0-9, `.`, `_`, `-`.
        username: String,
        /// Make the user an admin.
        #[arg(long)]
        admin: bool,
        /// Name shown to people (default: the username).
        #[arg(long)]
        display_name: Option<String>,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Create a new plugin crate that builds against the SDK (embedded in this binary).
    New {
        /// Plugin name (lowercase kebab; becomes `local/<name>` unless it has a namespace).
        name: String,
        #[arg(long, value_parser = ["tool", "provider", "channel", "skill"], default_value = "tool")]
        kind: String,
        /// Parent directory (default: the current one).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Build the plugin in the current directory for wasm32-wasip2 and pack its `.kelp`.
    Build {
        /// Plugin directory (default: the current one).
        #[arg(long)]
        path: Option<PathBuf>,
        /// Output file (default: <dir>/target/kelp/<name>-<version>.kelp).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Install a `.kelp` package: shows the capabilities it requests and asks for approval.
    Install {
        file: PathBuf,
        /// Approve everything the manifest requests (private addresses still need --grant http-private:HOST).
        #[arg(long, short)]
        yes: bool,
        /// Approve one capability: http:HOST[:PORT], http-private:HOST[:PORT], kv, workspace:read|write.
        #[arg(long = "grant")]
        grants: Vec<String>,
        /// Instance id (default: the plugin's short name).
        #[arg(long)]
        instance: Option<String>,
        /// Instance configuration as a JSON object (validated against the manifest's [config]).
        #[arg(long = "instance-config", default_value = "{}")]
        instance_config: String,
    },
    /// List installed plugins and their instances.
    List,
    /// Show a plugin or instance: manifest, requested and granted capabilities, tools.
    Info { name: String },
    /// Remove a plugin with its instances, secrets and data.
    Remove { name: String },
    /// Enable an instance.
    Enable { instance: String },
    /// Disable an instance.
    Disable { instance: String },
    /// Set a secret of an instance; the value is read from standard input.
    Secret { instance: String, name: String },
}

#[derive(Subcommand)]
enum ToolCommand {
    /// Call a tool: `kelp tool call <instance>/<tool> '<json>'`.
    Call {
        target: String,
        #[arg(default_value = "{}")]
        input: String,
    },
    /// List the tools of every enabled instance.
    List,
}

/// Entry point of the `kelp` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Plugin(PluginCommand::New { name, kind, dir }) => {
            authoring::new_plugin(&name, &kind, dir.as_deref())
        }
        Command::Plugin(PluginCommand::Build { path, out }) => {
            authoring::build_plugin(path.as_deref(), out.as_deref())
        }
        // A client of the server: it needs neither the data directory nor its configuration.
        Command::Chat(args) => chat::chat(args).await,
        command => {
            let data_dir = crate::config::data_dir(cli.data_dir.as_deref())?;
            let config = crate::config::Config::load(cli.config.as_deref(), &data_dir)?;
            match command {
                Command::Serve { bundled } => {
                    init_logging(&config.log_format);
                    crate::api::serve(config, data_dir, bundled).await?;
                    Ok(ExitCode::SUCCESS)
                }
                Command::Plugin(cmd) => {
                    init_logging("human");
                    admin::plugin(cmd, &config, &data_dir).await
                }
                Command::Tool(cmd) => {
                    init_logging("human");
                    admin::tool(cmd, &config, &data_dir).await
                }
                Command::User(cmd) => users::user(cmd, &config, &data_dir).await,
                Command::Chat(_) => unreachable!("handled before opening the data directory"),
            }
        }
    }
}

/// Logs to stderr; `RUST_LOG` filters (default `info`, plugin logs included).
pub fn init_logging(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
