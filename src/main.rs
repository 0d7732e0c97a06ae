use clap::Parser;
use warmstart::config::{Cli, Command};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    warmstart::config::tune_thread_pools();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warmstart=info,tower_http=warn".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Serve(config) => warmstart::app::serve(config).await,
        Command::Keys(args) => {
            warmstart::admin::keys(args, &mut std::io::stdout(), &mut std::io::stderr()).await
        }
        Command::Client(command) => std::process::exit(warmstart::cli::run(command).await),
    }
}
