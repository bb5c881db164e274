//! `alternator-dns`: flags, logging, then one call into the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use alternator_dns::config::{
    Cli, Command, Config, IoMode, LogFormat, Options, StatusArgs, DEFAULT_METRICS_LISTEN,
};
use alternator_dns::control::Shutdown;
use alternator_dns::exit;
use alternator_dns::plan::{Plan, AUTO_CHOICE};
use alternator_dns::reload::ReloadSource;
use alternator_dns::server::{self, RunError};
use alternator_dns::status;

fn main() -> ExitCode {
    // A command line that does not parse exits here with exit::USAGE.
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Status(args)) => show_status(args),
        None => serve(&cli),
    }
}

/// `status`: the running server's /nodes, as tables or JSON.
fn show_status(args: &StatusArgs) -> ExitCode {
    let listen = match (args.metrics, &args.config) {
        (Some(addr), _) => addr,
        (None, Some(file)) => match Config::load(Some(file), &Options::default()) {
            Ok(config) => match config.metrics_listen {
                Some(addr) => addr,
                None => {
                    eprintln!(
                        "alternator-dns: {}: metrics-listen is empty, so the server has no \
                         /nodes to ask; set it, or give --metrics ADDR:PORT",
                        file.display()
                    );
                    return ExitCode::from(exit::CONFIG);
                }
            },
            Err(e) => {
                eprintln!("alternator-dns: {e}");
                return ExitCode::from(exit::CONFIG);
            }
        },
        (None, None) => DEFAULT_METRICS_LISTEN,
    };
    match status::fetch(status::target(listen)) {
        Ok((json, _)) if args.json => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Ok((_, view)) => {
            print!("{}", status::table(&view));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("alternator-dns: {e}");
            ExitCode::from(exit::RUNTIME)
        }
    }
}

fn serve(cli: &Cli) -> ExitCode {
    let config = match Config::load(cli.config.as_deref(), &cli.options) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("alternator-dns: {e}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    if cli.check {
        return check(&config);
    }
    init_tracing(&config.log_level, config.log_format);
    let reload_from = cli.config.clone().map(|path| ReloadSource {
        path,
        flags: cli.options.clone(),
    });
    match server::run(&config, reload_from, Shutdown::new()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => failed(&e),
    }
}

/// `--check`: everything start-up loads, through the same assembly
/// ([`Plan::build`]); the effective configuration on stdout, what start-up
/// would warn about on stderr.
fn check(config: &Config) -> ExitCode {
    print!("{}", config.to_toml());
    let plan = match Plan::build(config) {
        Ok(plan) => plan,
        Err(e) => return failed(&e.into()),
    };
    for warning in config.resolver_warnings(&plan.nodes.zone) {
        eprintln!("alternator-dns: warning: {warning}");
    }
    for failure in &plan.nodes.unresolved {
        eprintln!("alternator-dns: warning: --seed not resolved, ignored: {failure}");
    }
    if config.tls.insecure_skip_verify {
        eprintln!(
            "alternator-dns: warning: --tls-insecure-skip-verify: the nodes' certificates are \
             not verified; anyone on the path can impersonate a node"
        );
    }
    eprintln!("alternator-dns: UDP I/O backend: {}", plan.backend.name());
    if config.io == IoMode::Auto {
        eprintln!("alternator-dns: {}", AUTO_CHOICE);
    }
    if let Some(summary) = config.forwarding_summary() {
        eprintln!("alternator-dns: {summary}");
    }
    eprintln!("alternator-dns: configuration OK (the listen addresses are not bound by --check)");
    ExitCode::SUCCESS
}

/// Prints why the server did not start or stopped, and the exit status of
/// that kind of failure.
fn failed(e: &RunError) -> ExitCode {
    eprintln!("alternator-dns: {e}");
    ExitCode::from(match e.is_configuration() {
        true => exit::CONFIG,
        false => exit::RUNTIME,
    })
}

fn init_tracing(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|e| {
        eprintln!("alternator-dns: --log-level {level:?} is not understood ({e}); using info");
        tracing_subscriber::EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}
