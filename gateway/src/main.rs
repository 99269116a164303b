//! The `atelier` binary: `atelier serve` runs the gateway; every other subcommand is the
//! command-line client of a running gateway.

use clap::{Parser, Subcommand};

use atelier_gateway::{cli, config, server};

// The proxy allocates a little per request; mimalloc makes that cheaper than glibc's malloc
// under many concurrent connections (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "atelier",
    version,
    about = "Atelier: notebooks, plugins and models on your own hardware"
)]
struct Cli {
    #[command(flatten)]
    client: cli::ClientOpts,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the server).
    Serve(config::ServeArgs),
    #[command(flatten)]
    Client(cli::ClientCommand),
}

fn init_tracing(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("ATELIER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            // The environment, handed to config.rs, which reads it.
            #[allow(clippy::disallowed_methods)]
            let env = |k: &str| std::env::var(k).ok();
            let settings = match config::Settings::load(&args, &env) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    std::process::exit(2);
                }
            };
            init_tracing(&settings.log_format);
            if let Err(e) = server::serve(settings).await {
                eprintln!("error: {e:#}");
                std::process::exit(1);
            }
        }
        Command::Client(cmd) => std::process::exit(cli::run(cli.client, cmd).await),
    }
}
