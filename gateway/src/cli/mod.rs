//! The `atelier` command-line client: everything but `atelier serve`.
//!
//! `main.rs` flattens [`ClientOpts`] into its top-level parser and [`ClientCommand`] into its
//! subcommands, then calls [`run`], whose return value is the process exit code:
//! 0 success, 1 API or usage error, 2 the server could not be reached.

mod admin;
mod algorithms;
mod api;
mod apps;
mod batch;
mod jobs;
mod keypairs;
mod models;
mod notebooks;
mod obs;
mod output;
mod plugins;
mod profile;
mod prompt;
mod search;
mod services;
mod storage;
mod table;
mod uploads;
mod workflow_runs;
mod workflow_triggers;
mod workflows;

use api::{Api, CliError};
use output::{err, out, print_json};
use profile::{Profile, config_path, load_profile, nonempty, remove_profile, save_profile};
use table::{cell, sanitize};

pub use admin::{AuditCommand, FlavorCommand, ImageCommand, TokenCommand, UserCommand};
pub use keypairs::{KeyPairCommand, SshCommand};
pub use notebooks::NotebookCommand;
pub use plugins::PluginCommand;

// Options shared by every client command (global: accepted before or after the subcommand).
// (A `///` comment here would become the `about` text of the command that flattens this.)
#[derive(clap::Args, Clone)]
pub struct ClientOpts {
    /// Server URL [default: the profile's, else http://127.0.0.1:8000].
    #[arg(
        long,
        global = true,
        env = "ATELIER_URL",
        value_name = "URL",
        help_heading = GLOBAL
    )]
    pub url: Option<String>,
    /// API token [default: the profile's].
    #[arg(
        long,
        global = true,
        env = "ATELIER_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        help_heading = GLOBAL
    )]
    pub token: Option<String>,
    /// Saved profile to use (see `atelier login`).
    #[arg(
        long,
        global = true,
        env = "ATELIER_PROFILE",
        default_value = "default",
        value_name = "NAME",
        help_heading = GLOBAL
    )]
    pub profile: String,
    /// Machine output: the server's JSON (the `items` array for lists).
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub json: bool,
}

const GLOBAL: &str = "Global options";

/// Like a derived `Debug`, but the token is never printed.
impl std::fmt::Debug for ClientOpts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOpts")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("profile", &self.profile)
            .field("json", &self.json)
            .finish()
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum ClientCommand {
    /// Check a token against the server and save it with the URL in a profile.
    ///
    /// The token comes from --token / ATELIER_TOKEN, else it is asked for (hidden) when stdin
    /// is a terminal, else read as one line from stdin.
    Login,
    /// Forget a saved profile.
    Logout,
    /// Show who the token belongs to.
    Whoami,
    /// Manage notebooks.
    #[command(subcommand, visible_alias = "nb")]
    Notebook(NotebookCommand),
    /// Manage users (admins only).
    #[command(subcommand)]
    User(UserCommand),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage SSH key pairs.
    #[command(subcommand)]
    Keypair(KeyPairCommand),
    /// The gateway's SSH front door.
    #[command(subcommand)]
    Ssh(SshCommand),
    /// Notebook flavors (sizes).
    #[command(subcommand)]
    Flavor(FlavorCommand),
    /// Notebook images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// The audit log (admins only).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Wasm plugins: start, build and test one locally; push, list and invoke on the gateway.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Object storage: connections to S3-compatible stores.
    #[command(subcommand)]
    Storage(storage::StorageCommand),
    /// The model registry: models and their versions.
    #[command(subcommand)]
    Model(models::ModelCommand),
    /// Training algorithms: Wasm components and commands with their code dir.
    #[command(subcommand)]
    Algorithm(algorithms::AlgorithmCommand),
    /// Training jobs: run an algorithm or a command on one or more workers.
    #[command(subcommand)]
    Job(jobs::JobCommand),
    /// Hyperparameter searches: trials of a job template (random, grid, TPE).
    #[command(subcommand)]
    Search(search::SearchCommand),
    /// Workflows: DAGs of Wasm, training, model, service and condition steps.
    #[command(subcommand)]
    Workflow(workflows::WorkflowCommand),
    /// Real-time services: deploy model versions, call them.
    #[command(subcommand)]
    Service(services::ServiceCommand),
    /// Applications: AppKeys and AppCodes that call the services bound to them.
    #[command(subcommand)]
    App(apps::AppCommand),
    /// Batch services: run a model version over a folder or manifest of files.
    #[command(subcommand)]
    Batch(batch::BatchCommand),
    /// Copy, list, inspect and delete objects straight in an S3-compatible store (AWS_*
    /// variables or ~/.aws profiles; no gateway needed).
    #[command(subcommand, visible_alias = "s3")]
    Obs(obs::ObsCommand),
}

/// What the command handlers need: an authenticated client and the output mode.
pub(crate) struct Ctx {
    api: Api,
    json: bool,
}

/// Runs one client command and returns the process exit code.
pub async fn run(opts: ClientOpts, cmd: ClientCommand) -> i32 {
    match dispatch(&opts, cmd).await {
        Ok(()) => 0,
        Err(e) => {
            err(&format!("error: {e}"));
            if let Some(hint) = e.hint() {
                err(&format!("hint: {hint}"));
            }
            e.exit_code()
        }
    }
}

async fn dispatch(opts: &ClientOpts, cmd: ClientCommand) -> Result<(), CliError> {
    match cmd {
        ClientCommand::Login => return login(opts).await,
        ClientCommand::Logout => return logout(opts),
        ClientCommand::Plugin(c) if c.is_local() => return plugins::run_local(opts, c),
        ClientCommand::Obs(c) => return obs::run(c).await,
        _ => {}
    }
    let ctx = connect(opts)?;
    match cmd {
        ClientCommand::Login | ClientCommand::Logout => Ok(()),
        ClientCommand::Whoami => whoami(&ctx).await,
        ClientCommand::Notebook(c) => notebooks::run(&ctx, c).await,
        ClientCommand::User(c) => admin::user(&ctx, c).await,
        ClientCommand::Token(c) => admin::token(&ctx, c).await,
        ClientCommand::Keypair(c) => keypairs::run(&ctx, c).await,
        ClientCommand::Ssh(c) => keypairs::ssh(&ctx, c).await,
        ClientCommand::Flavor(c) => admin::flavor(&ctx, c).await,
        ClientCommand::Image(c) => admin::image(&ctx, c).await,
        ClientCommand::Audit(c) => admin::audit(&ctx, c).await,
        ClientCommand::Plugin(c) => plugins::run(&ctx, c).await,
        ClientCommand::Storage(c) => storage::run(&ctx, c).await,
        ClientCommand::Model(c) => models::run(&ctx, c).await,
        ClientCommand::Algorithm(c) => algorithms::run(&ctx, c).await,
        ClientCommand::Job(c) => jobs::run(&ctx, c).await,
        ClientCommand::Search(c) => search::run(&ctx, c).await,
        ClientCommand::Workflow(c) => workflows::run(&ctx, c).await,
        ClientCommand::Service(c) => services::run(&ctx, c).await,
        ClientCommand::App(c) => apps::run(&ctx, c).await,
        ClientCommand::Batch(c) => batch::run(&ctx, c).await,
        ClientCommand::Obs(_) => Ok(()),
    }
}

fn profile_name(opts: &ClientOpts) -> Result<&str, CliError> {
    nonempty(Some(&opts.profile))
        .ok_or_else(|| CliError::other("the profile name must not be empty"))
}

/// The saved profile, when the flags/environment leave something to fill in.
fn saved_profile(opts: &ClientOpts) -> Result<Option<Profile>, CliError> {
    let name = profile_name(opts)?;
    let Some(path) = config_path() else {
        return Ok(None);
    };
    let profile = load_profile(&path, name)?;
    if profile.is_none() && name != "default" {
        return Err(CliError::other(format!(
            "no profile {:?} in {}; create it with `atelier login --profile {}`",
            sanitize(name),
            path.display(),
            sanitize(name)
        )));
    }
    Ok(profile)
}

fn connect(opts: &ClientOpts) -> Result<Ctx, CliError> {
    let complete =
        nonempty(opts.url.as_deref()).is_some() && nonempty(opts.token.as_deref()).is_some();
    let saved = if complete { None } else { saved_profile(opts)? };
    let endpoint = profile::resolve(opts.url.as_deref(), opts.token.as_deref(), saved.as_ref());
    let Some(token) = endpoint.token else {
        return Err(CliError::other(
            "no API token: run `atelier login` (or pass --token / set ATELIER_TOKEN)",
        ));
    };
    Ok(Ctx {
        api: Api::new(&endpoint.url, &token)?,
        json: opts.json,
    })
}

async fn whoami(ctx: &Ctx) -> Result<(), CliError> {
    let reply = ctx.api.get(&["v1", "whoami"], &[]).await?;
    if ctx.json {
        return print_json(&reply.raw, None);
    }
    out(&sanitize(&format!(
        "{} ({}) on {}",
        cell(&reply.value, "name"),
        cell(&reply.value, "role"),
        ctx.api.base()
    )));
    Ok(())
}

async fn login(opts: &ClientOpts) -> Result<(), CliError> {
    let name = profile_name(opts)?;
    let path = config_path().ok_or_else(|| {
        CliError::other("cannot find where to save the profile: set ATELIER_CLI_CONFIG or HOME")
    })?;
    // The URL: flag/env, else the one already saved in this profile, else the default.
    let existing = load_profile(&path, name)?;
    let url = profile::resolve(opts.url.as_deref(), None, existing.as_ref()).url;
    let base = api::display_base(&api::parse_base_url(&url)?);
    let token = match nonempty(opts.token.as_deref()) {
        Some(t) => t.to_string(),
        None => prompt::read_token().await?,
    };
    let api = Api::new(&base, &token)?;
    let me = api.get(&["v1", "whoami"], &[]).await?;
    save_profile(
        &path,
        name,
        &Profile {
            url: Some(base.clone()),
            token: Some(token.trim().to_string()),
        },
    )?;
    if opts.json {
        print_json(&me.raw, None)?;
    } else {
        out(&sanitize(&format!(
            "logged in to {base} as {} ({})",
            cell(&me.value, "name"),
            cell(&me.value, "role")
        )));
    }
    err(&format!(
        "saved profile {:?} in {}",
        sanitize(name),
        path.display()
    ));
    Ok(())
}

fn logout(opts: &ClientOpts) -> Result<(), CliError> {
    let name = profile_name(opts)?;
    let Some(path) = config_path() else {
        err(&format!("no saved profile {:?}", sanitize(name)));
        return Ok(());
    };
    if remove_profile(&path, name)? {
        err(&format!(
            "removed profile {:?} from {}",
            sanitize(name),
            path.display()
        ));
    } else {
        err(&format!(
            "no saved profile {:?} in {}",
            sanitize(name),
            path.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    /// The same shape as `main.rs`'s parser.
    #[derive(Parser, Debug)]
    #[command(name = "atelier")]
    struct TestCli {
        #[command(flatten)]
        client: ClientOpts,
        #[command(subcommand)]
        command: TestCommand,
    }

    #[derive(clap::Subcommand, Debug)]
    enum TestCommand {
        Serve,
        #[command(flatten)]
        Client(ClientCommand),
    }

    fn parse(args: &[&str]) -> Result<TestCli, clap::Error> {
        TestCli::try_parse_from(std::iter::once("atelier").chain(args.iter().copied()))
    }

    #[test]
    fn debug_hides_the_token() {
        let cli = parse(&["--token", "s3cret-value", "whoami"]).unwrap_or_else(|e| panic!("{e}"));
        let shown = format!("{:?}", cli.client);
        assert!(!shown.contains("s3cret-value"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn clap_definition_is_valid() {
        TestCli::command().debug_assert();
    }

    #[test]
    fn global_options_anywhere() {
        let cli = parse(&["nb", "list", "--json", "--url", "http://x:1", "--all"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(cli.client.json);
        assert_eq!(cli.client.url.as_deref(), Some("http://x:1"));
        assert!(matches!(
            cli.command,
            TestCommand::Client(ClientCommand::Notebook(NotebookCommand::List(ref a))) if a.all
        ));
        let cli = parse(&["--profile", "work", "login", "--token", "t"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cli.client.profile, "work");
        assert_eq!(cli.client.token.as_deref(), Some("t"));
        assert!(matches!(
            cli.command,
            TestCommand::Client(ClientCommand::Login)
        ));
    }

    #[test]
    fn notebook_subcommands_parse() {
        for args in [
            &["notebook", "create"][..],
            &[
                "nb",
                "create",
                "nb1",
                "--flavor",
                "cpu-2-8",
                "--image",
                "jupyterlab",
            ],
            &[
                "nb",
                "create",
                "--auto-stop-hours",
                "3",
                "--wait",
                "--timeout",
                "5",
            ],
            &["nb", "create", "--no-auto-stop", "--description", ""],
            &["nb", "get", "nb1"],
            &["nb", "start", "nb1", "--wait"],
            &["nb", "stop", "5c4f0b7e-1d2a-4c3b-9e8f-0123456789ab"],
            &["nb", "delete", "nb1", "--yes"],
            &["nb", "update", "nb1", "--name", "nb2", "--description", "d"],
            &["nb", "events", "nb1"],
            &["nb", "open", "nb1"],
            &[
                "nb", "list", "--status", "running", "--limit", "5", "--offset", "10",
            ],
            &["user", "create", "bob", "--role", "admin"],
            &["user", "list"],
            &["token", "create", "--user", "bob", "--label", "laptop"],
            &["token", "list"],
            &["token", "revoke", "abc"],
            &["flavor", "list"],
            &["image", "list"],
            &[
                "audit", "list", "--limit", "3", "--action", "login", "--user", "bob",
            ],
            &["whoami"],
            &["logout"],
        ] {
            if let Err(e) = parse(args) {
                panic!("{args:?}: {e}");
            }
        }
    }

    #[test]
    fn invalid_combinations_rejected() {
        for args in [
            &["nb", "create", "--no-auto-stop", "--auto-stop-hours", "2"][..],
            &["nb", "create", "--timeout", "5"],
            &["nb", "get"],
            &["user", "create", "bob", "--role", "root"],
            &["nb", "list", "--limit", "-1"],
        ] {
            assert!(parse(args).is_err(), "{args:?} should be rejected");
        }
    }
}
