//! `mcpgate-broker`: parse, run, map the error to an exit code.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use mcpgate_broker::cli::{Args, Command, LOG_ENV, LogFormat, Output, PolicyCommand, UserCommand};
use mcpgate_broker::{demo_server, init, quickstart, serve, store, users};

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcpgate-broker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env(LOG_ENV)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(
            std::env::var_os("NO_COLOR").is_none()
                && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        );
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Init { dir, names } => init::run(&dir, names),
        Command::Serve { config, log_format } => {
            init_logging(log_format);
            runtime()?.block_on(serve::run(&config, serve::print_ready))
        }
        Command::User {
            command:
                UserCommand::Add {
                    name,
                    roles,
                    config,
                    password_stdin,
                    force,
                },
        } => users::add(&config, &name, &roles, password_stdin, force),
        Command::Sessions {
            config,
            limit,
            output,
        } => {
            let cfg = mcpgate_broker::config::Config::load(&config)?;
            let sessions = store::Store::open(&cfg.data_dir())?.list(limit)?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&sessions)?),
                Output::Table => {
                    println!(
                        "{:<36}  {:<16}  {:<12}  {:<9}  {:<10}  REASON",
                        "SESSION", "USER", "SERVER", "STATE", "CREATED"
                    );
                    for s in sessions {
                        println!(
                            "{:<36}  {:<16}  {:<12}  {:<9}  {:<10}  {}",
                            s.id.as_str(),
                            s.user.as_str(),
                            s.server.as_str(),
                            s.state,
                            s.created_at,
                            s.end_reason.as_deref().unwrap_or("")
                        );
                    }
                }
            }
            Ok(())
        }
        Command::Quickstart {
            dir,
            api_listen,
            tunnel_listen,
            no_demo_session,
        } => {
            init_logging(LogFormat::Text);
            runtime()?.block_on(quickstart::run(
                dir,
                api_listen,
                tunnel_listen,
                !no_demo_session,
            ))
        }
        Command::Verify(args) => {
            use mcpgate_broker::record::verify;
            match verify::run(&args, &mut std::io::stdout().lock()) {
                Ok(true) => Ok(()),
                Ok(false) => std::process::exit(1),
                Err(e) if e.is::<verify::UsageError>() => {
                    eprintln!("mcpgate-broker: {e}");
                    std::process::exit(2)
                }
                Err(e) => Err(e),
            }
        }
        Command::DemoServer => demo_server::run(),
        Command::Policy {
            command: PolicyCommand::Check(args),
        } => {
            let effect = mcpgate_broker::policy::run_check(&args, &mut std::io::stdout().lock())?;
            match mcpgate_broker::policy::exit_code(effect) {
                0 => Ok(()),
                code => std::process::exit(code.into()),
            }
        }
        Command::Mask(args) => {
            let mut input = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut input)
                .map_err(|e| anyhow::anyhow!("cannot read stdin: {e}"))?;
            let out = mcpgate_broker::mask::dry_run::run(&args, &input)?;
            std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes())?;
            Ok(())
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Args::command(),
                "mcpgate-broker",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    }
}
