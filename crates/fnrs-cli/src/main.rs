//! `fnrs`: the server (`fnrs serve`) and a client of its API.

mod agent;
mod client;
mod conn;
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
    Serve(Box<serve::ServeArgs>),
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

/// Fn's `<NAME>_FILE` convention: a `serve` setting may come from a file (a
/// mounted secret, say). When neither the flag nor `<NAME>` is given and
/// `<NAME>_FILE` names a file, its contents (without the final newline)
/// become the flag.
fn with_file_settings(
    mut args: Vec<std::ffi::OsString>,
) -> anyhow::Result<Vec<std::ffi::OsString>> {
    use clap::Args as _;
    if args.get(1).is_none_or(|a| a != "serve") {
        return Ok(args);
    }
    let cmd = serve::ServeArgs::augment_args(clap::Command::new("serve"));
    let mut extra = Vec::new();
    for arg in cmd.get_arguments() {
        let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) else {
            continue;
        };
        let flag = format!("--{long}");
        let given = args.iter().skip(2).any(|a| {
            let a = a.to_string_lossy();
            a == flag || a.starts_with(&format!("{flag}="))
        });
        if given || std::env::var_os(env).is_some() {
            continue;
        }
        let mut file_var = env.to_os_string();
        file_var.push("_FILE");
        let Some(path) = std::env::var_os(&file_var) else {
            continue;
        };
        let text = std::fs::read_to_string(&path).map_err(|e| {
            anyhow::anyhow!(
                "{}={}: {e}",
                file_var.to_string_lossy(),
                path.to_string_lossy()
            )
        })?;
        let value = text.trim_end_matches(['\n', '\r']);
        if arg.get_action().takes_values() {
            extra.push(format!("{flag}={value}").into());
        } else if matches!(value, "1" | "true" | "TRUE" | "True") {
            extra.push(flag.into());
        }
    }
    args.extend(extra);
    Ok(args)
}

fn main() -> std::process::ExitCode {
    let args = match with_file_settings(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("Error: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let cli = Cli::parse_from(args);
    let result = match cli.cmd {
        Cmd::Serve(args) => {
            // A descriptor of the shell that started the server must not
            // reach what it spawns (defence in depth: every sandbox's child
            // setup does it too).
            fnrs_driver_process::close_inherited_fds_on_exec();
            serve::init_logging(&args);
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| {
                    let r = rt.block_on(serve::run(*args));
                    // A blocking thread stuck on a hung file system (a fn's
                    // directory, abandoned after its time limit) must not
                    // keep the server from exiting.
                    rt.shutdown_timeout(std::time::Duration::from_secs(2));
                    r
                })
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
        Cmd::Apps { opts, cmd } => client::apps(&client::Client::new(&opts)?, cmd).await,
        Cmd::Fns { opts, cmd } => client::fns(&client::Client::new(&opts)?, cmd).await,
        Cmd::Triggers { opts, cmd } => client::triggers(&client::Client::new(&opts)?, cmd).await,
        Cmd::Deploy { opts, args } => deploy::deploy(&client::Client::new(&opts)?, args).await,
        Cmd::Invoke { opts, args } => client::invoke(&client::Client::new(&opts)?, args).await,
        Cmd::Calls { opts, args } => client::calls(&client::Client::new(&opts)?, args).await,
        Cmd::Logs { opts, args } => client::logs(&client::Client::new(&opts)?, args).await,
    }
}
