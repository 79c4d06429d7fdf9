//! The `portcullis` command line: `check` validates a config (like `nginx -t`);
//! `run` runs the gateway, `trace` explains a verdict, `genkey`/`genpsk`/
//! `pubkey` make keys, `import` converts wg-quick files and `peer-config`
//! writes a client's wg-quick file. The logic lives in the library.
//!
//! Each subcommand has its own argument struct and `cmd_*` function so they
//! can be developed independently. Exit status: 0 on success, 1 on any error
//! (every config problem is printed to stderr), 2 on a usage error (clap).

use anyhow::Result;
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
    /// Run the gateway: open the TUN device and the WireGuard socket, drop
    /// privileges, and decide every packet until SIGINT/SIGTERM.
    ///
    /// In TUN mode it needs root (or CAP_NET_ADMIN) to create the TUN
    /// device; in netstack mode (`interface.mode = "netstack"`) no privilege
    /// at all. Logs go to
    /// stderr (level and format from the [log] section; PORTCULLIS_LOG, in
    /// tracing's EnvFilter syntax, overrides them).
    Run(RunArgs),
    /// Show how the gateway would treat one packet, stage by stage, and the
    /// rule that decides it. Nothing is sent.
    Trace(TraceArgs),
    /// Generate a private key and print it in base64 (like `wg genkey`).
    Genkey(GenkeyArgs),
    /// Generate a preshared key and print it in base64 (like `wg genpsk`).
    Genpsk(GenkeyArgs),
    /// Read a private key on standard input and print its public key (like `wg pubkey`).
    Pubkey(PubkeyArgs),
    /// Convert a wg-quick configuration ([Interface]/[Peer]) into portcullis TOML on standard output.
    Import(ImportArgs),
    /// Print a ready wg-quick configuration for one peer (a client of this gateway).
    PeerConfig(PeerConfigArgs),
    /// Talk to the running gateway over its control socket: status, peers,
    /// flows, rule counters, reload.
    ///
    /// The socket (control.socket, default /run/portcullis/control.sock) is
    /// mode 0600 (root only) or 0660 with control.group; other users get a
    /// permission error. Output is for humans; --json prints the reply's
    /// data as JSON for scripts. Exit status 1 when the gateway answers with
    /// an error (a rejected reload prints every problem).
    Ctl(CtlArgs),
    /// Print a shell completion script for bash, zsh, fish, elvish or powershell.
    ///
    /// Example: portcullis completions bash > /etc/bash_completion.d/portcullis
    Completions(CompletionsArgs),
}

#[derive(Debug, Args)]
struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
portcullis ctl status\n  \
portcullis ctl peers --json\n  \
portcullis ctl conntrack --peer laptop --state established\n  \
portcullis ctl conntrack --addr 203.0.113.9 --flush\n  \
portcullis ctl rules\n  \
portcullis ctl reload")]
struct CtlArgs {
    /// The gateway's control socket.
    #[arg(
        short,
        long,
        value_name = "PATH",
        env = "PORTCULLIS_SOCKET",
        default_value = portcullis::config::ops::DEFAULT_SOCKET,
        global = true
    )]
    socket: PathBuf,
    /// Print the reply as JSON (the `data` of the reply) instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Seconds to wait for the reply.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, global = true)]
    timeout: u64,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Debug, Subcommand)]
enum CtlCommand {
    /// Version, interface, uptime, peers with a session, flows, rule generation.
    Status,
    /// Each peer: endpoint, latest handshake, bytes each way, allowed IPs (like `wg show`).
    Peers,
    /// List tracked flows (filters combine with AND), or remove them with --flush.
    Conntrack(CtlConntrackArgs),
    /// Every rule and chain policy with its packet and byte counters.
    Rules,
    /// Packet counters by verdict, drops by reason, limits, flows, IO counters.
    Stats,
    /// Reload the configuration file (like SIGHUP) and report what changed or
    /// every problem found; on a problem the running configuration stays.
    Reload,
    /// NAT bindings (original -> translated tuples; the conntrack filters),
    /// load-balancer backends and NAT counters; `nat drain|undrain BACKEND`
    /// marks a backend down/up at run time.
    Nat(CtlNatArgs),
    /// Block a source address, a network or a WireGuard peer: its packets are
    /// dropped before anything else (reason `blocked`), live flows included.
    Block {
        /// `ADDR`, `NET/PREFIX`, `peer:NAME` or `peer:PUBLIC_KEY` (a peer is
        /// blocked whatever source address it uses).
        addr: String,
        /// How long ("30s", "10m", "2h"); default blocklist.default_ttl, else
        /// until unblocked.
        #[arg(long, value_name = "DURATION")]
        ttl: Option<String>,
        /// Why (shown by `ctl blocklist` and in the EVE record).
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Remove an address, network or peer from the blocklist (whatever added it).
    Unblock {
        /// `ADDR`, `NET/PREFIX`, `peer:NAME` or `peer:PUBLIC_KEY`, as listed.
        addr: String,
    },
    /// The blocklist: target, origin (config, anomaly, rule, ids, ctl),
    /// time left, age, hits (packets dropped) and reason.
    Blocklist,
}

#[derive(Debug, Args)]
struct CtlConntrackArgs {
    /// Flows with this address at either end.
    #[arg(long, value_name = "IP")]
    addr: Option<std::net::IpAddr>,
    /// Flows with this port at either end.
    #[arg(long, value_name = "PORT")]
    port: Option<u16>,
    /// Flows entering from or leaving to this zone (a peer name or `tun`).
    #[arg(long, value_name = "NAME")]
    peer: Option<String>,
    /// Flows in this state (established, syn_sent, time_wait, udp_replied, icmp, ...).
    #[arg(long, value_name = "STATE")]
    state: Option<String>,
    /// Flows of this protocol (tcp, udp, icmp, icmpv6 or a number).
    #[arg(long, value_name = "PROTO")]
    proto: Option<String>,
    /// Remove the selected flows (all flows without filters) instead of listing them.
    #[arg(long)]
    flush: bool,
    /// List at most this many flows.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
}

#[derive(Debug, Args)]
struct CtlNatArgs {
    #[command(subcommand)]
    action: Option<CtlNatAction>,
    /// Bindings with this address at either end (original or translated).
    #[arg(long, value_name = "IP")]
    addr: Option<std::net::IpAddr>,
    /// Bindings with this port at either end.
    #[arg(long, value_name = "PORT")]
    port: Option<u16>,
    /// Bindings entering from or leaving to this zone (a peer name or `tun`).
    #[arg(long, value_name = "NAME")]
    peer: Option<String>,
    /// Bindings in this state (established, syn_sent, udp_replied, ...).
    #[arg(long, value_name = "STATE")]
    state: Option<String>,
    /// Bindings of this protocol (tcp, udp, icmp, icmpv6 or a number).
    #[arg(long, value_name = "PROTO")]
    proto: Option<String>,
    /// List at most this many bindings.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
}

#[derive(Debug, Subcommand)]
enum CtlNatAction {
    /// Mark a load-balancer backend down: no new flows, live ones go on.
    Drain(CtlBackendArgs),
    /// Mark a load-balancer backend up again (also over `down = true` in the config).
    Undrain(CtlBackendArgs),
}

#[derive(Debug, Args)]
struct CtlBackendArgs {
    /// The backend: ADDRESS:PORT as in the config ("192.0.2.11:80"), or an address (all its ports).
    backend: String,
    /// Only in this [[nat]] entry (by name; default: every dnat entry holding the backend).
    #[arg(long, value_name = "NAME")]
    rule: Option<String>,
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
#[command(after_help = "Examples:\n  \
portcullis trace --from laptop tcp 100.64.0.2:40000 203.0.113.2:443 --flags S\n  \
portcullis trace --from tun udp 203.0.113.2:53 100.64.0.3:5353\n  \
portcullis trace --from phone icmp 100.64.0.3 100.64.0.1")]
struct TraceArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The zone the packet enters from: `tun` or a peer name (`peer:NAME`).
    #[arg(long, value_name = "ZONE")]
    from: String,
    /// Protocol: tcp, udp, icmp or icmpv6.
    #[arg(value_name = "PROTO")]
    proto: String,
    /// Source: ADDR:PORT for tcp/udp (IPv6 as [ADDR]:PORT), ADDR for icmp.
    #[arg(value_name = "SRC")]
    src: String,
    /// Destination, in the same form as the source.
    #[arg(value_name = "DST")]
    dst: String,
    /// TCP flags as letters: S (SYN), A (ACK), F (FIN), R (RST), P (PSH), U, E, C. Default S.
    #[arg(long)]
    flags: Option<String>,
    /// ICMP type (default: echo request).
    #[arg(long, value_name = "TYPE")]
    icmp_type: Option<u8>,
    /// ICMP code (default 0).
    #[arg(long, value_name = "CODE")]
    icmp_code: Option<u8>,
    /// Payload, as text.
    #[arg(long)]
    payload: Option<String>,
}

#[derive(Debug, Args)]
struct GenkeyArgs {}

#[derive(Debug, Args)]
struct PubkeyArgs {}

#[derive(Debug, Args)]
struct ImportArgs {
    /// The wg-quick file to import (`-` for standard input). Its name without
    /// `.conf` becomes the interface name.
    #[arg(value_name = "WG_QUICK_FILE")]
    file: PathBuf,
}

#[derive(Debug, Args)]
struct PeerConfigArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The peer's name.
    #[arg(value_name = "PEER")]
    peer: String,
    /// HOST:PORT at which clients reach the gateway (written as `Endpoint`).
    #[arg(long, value_name = "HOST:PORT")]
    endpoint: Option<String>,
    /// Route everything through the tunnel (AllowedIPs = 0.0.0.0/0, ::/0)
    /// instead of the tunnel prefixes only.
    #[arg(long)]
    full_tunnel: bool,
    /// Persistent keepalive for the client, in seconds.
    #[arg(long, value_name = "SECONDS")]
    keepalive: Option<u16>,
    /// The client's private key file, if the gateway's operator has it
    /// (otherwise a placeholder line is written).
    #[arg(long, value_name = "FILE")]
    private_key_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check(a) => cmd_check(a),
        Command::Run(a) => cmd_run(a),
        Command::Trace(a) => cmd_trace(a),
        Command::Genkey(a) => cmd_genkey(a),
        Command::Genpsk(a) => cmd_genpsk(a),
        Command::Pubkey(a) => cmd_pubkey(a),
        Command::Import(a) => cmd_import(a),
        Command::PeerConfig(a) => cmd_peer_config(a),
        Command::Ctl(a) => cmd_ctl(a),
        Command::Completions(a) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(a.shell, &mut cmd, "portcullis", &mut out);
            // a closed pipe (`| head`) is not an error
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &out);
            Ok(ExitCode::SUCCESS)
        }
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

fn init_logging(log: &portcullis::config::LogConfig) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("PORTCULLIS_LOG")
        .unwrap_or_else(|_| EnvFilter::new(log.level.as_str().to_ascii_lowercase()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match log.format {
        portcullis::config::LogFormat::Json => builder.json().init(),
        portcullis::config::LogFormat::Human => builder.init(),
    }
}

fn load_or_report(path: &std::path::Path) -> Result<portcullis::config::Config> {
    portcullis::config::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

fn cmd_run(args: RunArgs) -> Result<ExitCode> {
    let config = load_or_report(&args.config.config)?;
    init_logging(&config.log);
    let settings = portcullis::io::RunSettings::from_config(&config)?;
    portcullis::io::run(settings)?;
    Ok(ExitCode::SUCCESS)
}

fn cmd_trace(args: TraceArgs) -> Result<ExitCode> {
    let config = load_or_report(&args.config.config)?;
    let req = portcullis::tracecmd::TraceRequest {
        from: args.from,
        proto: args.proto.to_ascii_lowercase(),
        src: args.src,
        dst: args.dst,
        flags: args.flags,
        icmp_type: args.icmp_type,
        icmp_code: args.icmp_code,
        payload: args.payload,
    };
    print!("{}", portcullis::tracecmd::trace(&config, &req)?);
    Ok(ExitCode::SUCCESS)
}

fn cmd_genkey(_args: GenkeyArgs) -> Result<ExitCode> {
    println!("{}", portcullis::wg::keys::genkey());
    Ok(ExitCode::SUCCESS)
}

fn cmd_genpsk(_args: GenkeyArgs) -> Result<ExitCode> {
    println!("{}", portcullis::wg::keys::genpsk());
    Ok(ExitCode::SUCCESS)
}

fn cmd_pubkey(_args: PubkeyArgs) -> Result<ExitCode> {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
    println!("{}", portcullis::wg::keys::pubkey(text.trim())?);
    Ok(ExitCode::SUCCESS)
}

fn cmd_import(args: ImportArgs) -> Result<ExitCode> {
    use anyhow::Context;
    let (text, ifname) = if args.file.as_os_str() == "-" {
        let mut t = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut t)?;
        (t, "wg0".to_string())
    } else {
        let t = std::fs::read_to_string(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?;
        let stem = args
            .file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "wg0".into());
        (t, stem)
    };
    let imported = portcullis::wg::quick::import_wg_quick(&text, &ifname)
        .with_context(|| format!("importing {}", args.file.display()))?;
    for n in &imported.notes {
        eprintln!("portcullis: note: {n}");
    }
    print!("{}", imported.toml);
    Ok(ExitCode::SUCCESS)
}

fn cmd_peer_config(args: PeerConfigArgs) -> Result<ExitCode> {
    use anyhow::Context;
    use portcullis::wg::quick::{peer_config, tunnel_prefixes, ClientConfig};
    let config = load_or_report(&args.config.config)?;
    let peer = config
        .peers
        .iter()
        .find(|p| p.name == args.peer)
        .with_context(|| {
            let names: Vec<&str> = config.peers.iter().map(|p| p.name.as_str()).collect();
            format!(
                "no peer named {:?} (peers: {})",
                args.peer,
                names.join(", ")
            )
        })?;
    let private_key = match &args.private_key_file {
        Some(f) => Some(portcullis::wg::keys::read_key_file(f)?),
        None => None,
    };
    let allowed_ips = if args.full_tunnel {
        vec!["0.0.0.0/0".parse()?, "::/0".parse()?]
    } else {
        tunnel_prefixes(&config.interface.addresses)
    };
    let client = ClientConfig {
        name: peer.name.clone(),
        private_key,
        addresses: peer.allowed_ips.clone(),
        mtu: Some(config.interface.mtu),
        dns: vec![],
        gateway_public_key: config.interface.public_key(),
        preshared_key: peer.preshared_key,
        gateway_endpoint: args.endpoint,
        allowed_ips,
        persistent_keepalive: args.keepalive,
    };
    print!("{}", peer_config(&client));
    Ok(ExitCode::SUCCESS)
}

fn cmd_ctl(args: CtlArgs) -> Result<ExitCode> {
    use portcullis::control::{render, Command as C, FlowFilter, Request};
    let cmd = match args.command {
        CtlCommand::Status => C::Status,
        CtlCommand::Peers => C::Peers,
        CtlCommand::Conntrack(a) => C::Conntrack {
            filter: FlowFilter {
                addr: a.addr,
                port: a.port,
                peer: a.peer,
                state: a.state,
                proto: a.proto,
            },
            flush: a.flush,
            limit: a.limit,
        },
        CtlCommand::Rules => C::Rules,
        CtlCommand::Stats => C::Stats,
        CtlCommand::Reload => C::Reload,
        CtlCommand::Nat(a) => match a.action {
            Some(CtlNatAction::Drain(b)) => C::NatDrain {
                backend: b.backend,
                rule: b.rule,
            },
            Some(CtlNatAction::Undrain(b)) => C::NatUndrain {
                backend: b.backend,
                rule: b.rule,
            },
            None => C::Nat {
                filter: FlowFilter {
                    addr: a.addr,
                    port: a.port,
                    peer: a.peer,
                    state: a.state,
                    proto: a.proto,
                },
                limit: a.limit,
            },
        },
        CtlCommand::Block { addr, ttl, reason } => C::Block {
            addr,
            ttl_secs: match ttl {
                Some(t) => Some(
                    portcullis::config::parse::duration(&t)
                        .map_err(|e| anyhow::anyhow!("--ttl {t:?}: {e}"))?
                        .as_secs()
                        .max(1),
                ),
                None => None,
            },
            reason,
        },
        CtlCommand::Unblock { addr } => C::Unblock { addr },
        CtlCommand::Blocklist => C::Blocklist,
    };
    let req = Request::new(cmd.clone());
    let reply = portcullis::io::control::request(
        &args.socket,
        &req,
        std::time::Duration::from_secs(args.timeout.max(1)),
    )?;
    if !reply.ok {
        if args.json {
            println!("{}", serde_json::to_string_pretty(&reply)?);
        }
        eprintln!(
            "portcullis: {}",
            reply
                .error
                .as_deref()
                .unwrap_or("the gateway refused the request")
        );
        for e in &reply.errors {
            eprintln!("  {e}");
        }
        return Ok(ExitCode::FAILURE);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reply.data)?);
    } else {
        print!(
            "{}",
            render::human(&cmd, &reply).map_err(anyhow::Error::msg)?
        );
    }
    Ok(ExitCode::SUCCESS)
}
