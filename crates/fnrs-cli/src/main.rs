//! `fnrs`: the server (`fnrs serve`) and a client of its API.

mod agent;
mod client;
mod deploy;
mod serve;

use clap::{Parser, Subcommand};

/// fnrs: a functions-as-a-service server compatible with the Fn Project.
#[derive(Debug, Parser)]
#[command(name = "fnrs", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the server.
    Serve(serve::ServeArgs),
    /// Manage apps.
    Apps {
        #[command(flatten)]
        opts: client::ClientOpts,
        #[command(subcommand)]
        cmd: client::AppsCmd,
    },
    /// Manage fns.
    Fns {
        #[command(flatten)]
        opts: client::ClientOpts,
        #[command(subcommand)]
        cmd: client::FnsCmd,
    },
    /// Manage triggers.
    Triggers {
        #[command(flatten)]
        opts: client::ClientOpts,
        #[command(subcommand)]
        cmd: client::TriggersCmd,
    },
    /// Deploy a function directory (func.yaml) as a fn with its triggers.
    Deploy {
        #[command(flatten)]
        opts: client::ClientOpts,
        #[command(flatten)]
        args: deploy::DeployArgs,
    },
    /// Call a fn with stdin as the body; prints the answer.
    Invoke {
        #[command(flatten)]
        opts: client::ClientOpts,
        #[command(flatten)]
        args: client::InvokeArgs,
    },
    /// List a fn's recent calls.
    Calls {
        #[command(flatten)]
        opts: client::ClientOpts,
        #[command(flatten)]
        args: client::CallsArgs,
    },
    /// Print the log of one call.
    Logs {
        #[command(flatten)]
        opts: client::ClientOpts,
        #[command(flatten)]
        args: client::LogsArgs,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Serve(args) => {
            serve::init_logging(&args);
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(serve::run(args)))
        }
        other => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(run_client(other))),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            if let Some(f) = e.downcast_ref::<client::ApiFailure>() {
                eprintln!("Error: {}", f.message);
            } else {
                eprintln!("Error: {e:#}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run_client(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Serve(_) => unreachable!("handled in main"),
        Cmd::Apps { opts, cmd } => client::apps(&client::Client::new(&opts), cmd).await,
        Cmd::Fns { opts, cmd } => client::fns(&client::Client::new(&opts), cmd).await,
        Cmd::Triggers { opts, cmd } => client::triggers(&client::Client::new(&opts), cmd).await,
        Cmd::Deploy { opts, args } => deploy::deploy(&client::Client::new(&opts), args).await,
        Cmd::Invoke { opts, args } => client::invoke(&client::Client::new(&opts), args).await,
        Cmd::Calls { opts, args } => client::calls(&client::Client::new(&opts), args).await,
        Cmd::Logs { opts, args } => client::logs(&client::Client::new(&opts), args).await,
    }
}
