//! The `portcullis` command line: `check` validates a config (like `nginx -t`);
//! `run`, `trace`, `genkey`, `pubkey`, `import` and `peer-config` are declared
//! here with their arguments and filled in by their own modules.
//!
//! Each subcommand has its own argument struct and `cmd_*` function so they
//! can be developed independently. Exit status: 0 on success, 1 on any error
//! (every config problem is printed to stderr), 2 on a usage error (clap).

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// A userspace WireGuard gateway firewall: rules, connection tracking, NAT and
/// IDS in one binary.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate the configuration and print a summary (like `nginx -t`).
    ///
    /// Reads the config file plus PORTCULLIS__SECTION__KEY environment
    /// overrides, checks every key, and prints a summary. On error, every
    /// problem is printed to stderr (file, key path, bad value, what is
    /// expected) and the exit status is 1.
    Check(CheckArgs),
    /// Run the gateway (not implemented yet).
    Run(RunArgs),
    /// Show how the rules would treat a packet (not implemented yet).
    Trace(TraceArgs),
    /// Generate a private key and print it in base64 (not implemented yet).
    Genkey(GenkeyArgs),
    /// Read a private key on stdin and print its public key (not implemented yet).
    Pubkey(PubkeyArgs),
    /// Import a wg-quick configuration (not implemented yet).
    Import(ImportArgs),
    /// Print a wg-quick configuration for a peer (not implemented yet).
    PeerConfig(PeerConfigArgs),
}

/// The config file option shared by the subcommands that read it.
#[derive(Debug, Args)]
struct ConfigArg {
    /// The configuration file.
    #[arg(
        short,
        long,
        value_name = "FILE",
        env = "PORTCULLIS_CONFIG",
        default_value = portcullis::config::DEFAULT_PATH
    )]
    config: PathBuf,
}

#[derive(Debug, Args)]
struct CheckArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Print nothing on success (problems are still printed).
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(Debug, Args)]
struct TraceArgs {
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(Debug, Args)]
struct GenkeyArgs {}

#[derive(Debug, Args)]
struct PubkeyArgs {}

#[derive(Debug, Args)]
struct ImportArgs {
    /// The wg-quick file to import.
    #[arg(value_name = "WG_QUICK_FILE")]
    file: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct PeerConfigArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The peer's name.
    #[arg(value_name = "PEER")]
    peer: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check(a) => cmd_check(a),
        Command::Run(a) => cmd_run(a),
        Command::Trace(a) => cmd_trace(a),
        Command::Genkey(a) => cmd_genkey(a),
        Command::Pubkey(a) => cmd_pubkey(a),
        Command::Import(a) => cmd_import(a),
        Command::PeerConfig(a) => cmd_peer_config(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("portcullis: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn cmd_check(args: CheckArgs) -> Result<ExitCode> {
    let path = &args.config.config;
    match portcullis::config::load(path) {
        Ok(config) => {
            if !args.quiet {
                print!("{}", config.summary());
                println!("portcullis: configuration {} is valid", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let n = e.problems.len();
            eprintln!(
                "portcullis: configuration {} has {n} problem{}:",
                path.display(),
                if n == 1 { "" } else { "s" }
            );
            for p in &e.problems {
                eprintln!("  {p}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

fn cmd_run(_args: RunArgs) -> Result<ExitCode> {
    bail!("`run` is not implemented yet")
}

fn cmd_trace(_args: TraceArgs) -> Result<ExitCode> {
    bail!("`trace` is not implemented yet")
}

fn cmd_genkey(_args: GenkeyArgs) -> Result<ExitCode> {
    bail!("`genkey` is not implemented yet")
}

fn cmd_pubkey(_args: PubkeyArgs) -> Result<ExitCode> {
    bail!("`pubkey` is not implemented yet")
}

fn cmd_import(_args: ImportArgs) -> Result<ExitCode> {
    bail!("`import` is not implemented yet")
}

fn cmd_peer_config(_args: PeerConfigArgs) -> Result<ExitCode> {
    bail!("`peer-config` is not implemented yet")
}
