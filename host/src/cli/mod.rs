//! The `kelp` command. `serve` runs the server; `plugin new|build` are an author's tools and
//! need no server; everything else is a client of a running server, through its HTTP API
//! (`client.rs`): `login`, plugin administration, `tool`, `user`, `agent`, `provider`, `chat`.
//! Only `user add` before the first start, with no server configured, works on the data
//! directory itself.

mod admin;
mod agents;
mod authoring;
mod channels;
mod chat;
mod client;
mod input;
mod login;
mod providers;
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
    #[command(flatten)]
    server: client::ServerArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (HTTP API and plugin runtime).
    Serve {
        /// Directory of `.kelp` packages to install at start, each if its plugin is not
        /// installed yet, instead of the first-party plugins built into this binary (which
        /// are installed on a database that never had a plugin). Default:
        /// $KELP_BUNDLED_PLUGINS.
        #[arg(long, env = "KELP_BUNDLED_PLUGINS")]
        bundled: Option<PathBuf>,
    },
    /// Sign in to a server; later commands go to it with a token of their own.
    Login(login::LoginArgs),
    /// Forget the stored login and revoke its token.
    Logout,
    /// Write and build plugins (no server needed); install and manage them on the server.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// List and call tools.
    #[command(subcommand)]
    Tool(ToolCommand),
    /// Manage user accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Your agents.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Model providers: credentials and models.
    #[command(subcommand)]
    Provider(ProviderCommand),
    /// Chat channels: bots on chat platforms that talk to your agents.
    #[command(subcommand)]
    Channel(ChannelCommand),
    /// Chat with an agent on a running server; one line of input is one message.
    Chat(chat::ChatArgs),
    /// Compiles the plugin component on standard input into a compile cache. `kelp serve`
    /// runs it, so that the compiler's memory is never the server's.
    #[command(hide = true)]
    CompileWorker {
        #[arg(long)]
        cache_dir: PathBuf,
        #[arg(long)]
        key_file: PathBuf,
        #[arg(long)]
        sha256: String,
    },
}

#[derive(Subcommand)]
enum ChannelCommand {
    /// Add a channel: a bot on a chat platform that talks to one of your agents. The bot's
    /// secret (Telegram: the token from @BotFather) is read from standard input.
    Add {
        /// The channel plugin: `telegram`, `webhook`, or `namespace/name`.
        plugin: String,
        /// The agent that answers (name or id).
        #[arg(long)]
        agent: String,
        /// Which secret standard input holds.
        #[arg(long, default_value = "BOT_TOKEN")]
        secret: String,
        /// Who may talk to the agent (default pairing: strangers get a code you approve).
        #[arg(long, value_parser = ["pairing", "allowlist", "open", "disabled"])]
        access: Option<String>,
        /// How events arrive (default: the plugin's first choice; Telegram polls).
        #[arg(long, value_parser = ["poll", "webhook"])]
        mode: Option<String>,
        /// The plugin instance's configuration, a JSON object (e.g. '{"api_base": "http://127.0.0.1:8081"}').
        #[arg(long = "instance-config", default_value = "{}")]
        instance_config: String,
        /// Approve one more capability, e.g. http-private:127.0.0.1:8081; repeatable.
        #[arg(long = "grant")]
        grants: Vec<String>,
        /// A sender id `--access allowlist` lets in; repeatable.
        #[arg(long = "allow")]
        allow: Vec<String>,
        /// Do not start it yet.
        #[arg(long)]
        stopped: bool,
    },
    /// List your channels.
    List,
    /// A channel's state, its bot, its last error and its chats.
    Status { id: String },
    /// Start a channel (and again after restarts).
    Start { id: String },
    /// Stop a channel.
    Stop { id: String },
    /// Delete a channel and its plugin instance.
    Remove { id: String },
    /// Pairing of chats with the agent.
    #[command(subcommand)]
    Pair(PairCommand),
}

#[derive(Subcommand)]
enum PairCommand {
    /// Approve the chat that was given CODE.
    Approve { code: String },
}

#[derive(Subcommand)]
enum AgentCommand {
    /// List your agents.
    List,
    /// Create an agent.
    Add {
        /// 1–64 characters, unique among your agents.
        name: String,
        /// Provider instance id (`kelp provider list`), e.g. openai.
        #[arg(long)]
        provider: String,
        /// Model name as the provider knows it (`kelp provider models ID`).
        #[arg(long)]
        model: String,
        /// System prompt.
        #[arg(long)]
        instructions: Option<String>,
        /// A tool the agent may call, as instance/tool (`kelp tool list`); repeatable.
        #[arg(long = "tool", value_name = "INSTANCE/TOOL")]
        tools: Vec<String>,
        /// A skill (an installed plugin with a SKILL.md); repeatable.
        #[arg(long = "skill", value_name = "PLUGIN")]
        skills: Vec<String>,
        /// Most provider calls in one run (1–100, default 10).
        #[arg(long)]
        max_steps: Option<i64>,
    },
    /// Show an agent as JSON.
    Show { name: String },
    /// Delete an agent (its sessions stay).
    Remove { name: String },
}

#[derive(Subcommand)]
enum ProviderCommand {
    /// List provider instances and whether each has its key.
    List,
    /// Set a provider's base URL and/or API key (admins).
    Set {
        id: String,
        /// Where the vendor's API is; a loopback or private address (a local Ollama, vLLM)
        /// is approved for this provider by this.
        #[arg(long, value_name = "URL")]
        base_url: Option<String>,
        /// Read the API key from standard input.
        #[arg(long)]
        api_key: bool,
    },
    /// List the models a provider offers.
    Models { id: String },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user; the password is read from standard input. With no server configured
    /// this works on the data directory's database, so the first admin can be made before
    /// the server's first start.
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
    /// List users (admins).
    List,
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
    /// Install a `.kelp` package on the server: shows the capabilities it requests and asks
    /// for approval.
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
    /// Enable an instance (or, named `namespace/name`, every instance of a plugin).
    Enable { instance: String },
    /// Disable an instance (or, named `namespace/name`, every instance of a plugin).
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
        Command::CompileWorker {
            cache_dir,
            key_file,
            sha256,
        } => {
            crate::plugins::cache::run_worker(&cache_dir, &key_file, &sha256)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { bundled } => {
            let data_dir = crate::config::data_dir(cli.data_dir.as_deref())?;
            let config = crate::config::Config::load(cli.config.as_deref(), &data_dir)?;
            init_logging(&config.log_format);
            if crate::config::create_data_dir(&data_dir)? {
                tracing::info!(path = %data_dir.display(), "created the data directory");
            }
            crate::api::serve(config, data_dir, bundled).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Login(args) => login::login(args, &cli.server).await,
        Command::Logout => login::logout().await,
        // The first admin, before there is a server to sign in to.
        Command::User(cmd @ UserCommand::Add { .. }) if !cli.server.configured()? => {
            let data_dir = crate::config::data_dir(cli.data_dir.as_deref())?;
            let config = crate::config::Config::load(cli.config.as_deref(), &data_dir)?;
            users::add_local(cmd, &config, &data_dir).await
        }
        command => {
            let server = cli.server.connect()?;
            match command {
                Command::Plugin(cmd) => admin::plugin(cmd, &server).await,
                Command::Tool(cmd) => admin::tool(cmd, &server).await,
                Command::User(cmd) => users::user(cmd, &server).await,
                Command::Agent(cmd) => agents::agent(cmd, &server).await,
                Command::Provider(cmd) => providers::provider(cmd, &server).await,
                Command::Channel(cmd) => channels::channel(cmd, &server).await,
                Command::Chat(args) => chat::chat(args, server).await,
                Command::Serve { .. }
                | Command::CompileWorker { .. }
                | Command::Login(_)
                | Command::Logout => {
                    unreachable!("handled above")
                }
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
