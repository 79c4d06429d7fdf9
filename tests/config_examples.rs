//! The example configs in conf/ are valid, and `portcullis check` behaves like
//! `nginx -t`: exit 0 with a summary on a good config, exit 1 with every
//! problem on stderr on a bad one.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup step should panic
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const PRIV: &str = "yoRQQN/78RsBQ4jpF6jl6cepio0CtxwVueb3Ge92IKY=";
const PSK: &str = "EuEnIn6KiiZfm3LcBOa6QypiB/afq2/Xcn57q2TXGzc=";

fn conf(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("conf")
        .join(name)
}

fn examples() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("conf"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    v.sort();
    v
}

/// Copies an example into `dir` with its `/etc/portcullis/` key files moved
/// there (written with mode 600).
fn install(example: &Path, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(example).unwrap();
    let text = text.replace("/etc/portcullis/", &format!("{}/", dir.display()));
    for (name, key) in [("private.key", PRIV), ("phone.psk", PSK)] {
        let p = dir.join(name);
        std::fs::write(&p, format!("{key}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let out = dir.join(example.file_name().unwrap());
    std::fs::write(&out, text).unwrap();
    out
}

fn portcullis(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("PORTCULLIS") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn every_example_loads() {
    let ex = examples();
    assert!(
        ex.len() >= 2,
        "expected gateway.toml and minimal.toml, found {ex:?}"
    );
    for example in ex {
        let dir = tempfile::tempdir().unwrap();
        let path = install(&example, dir.path());
        let c = portcullis::config::load_with_env(&path, Vec::new())
            .unwrap_or_else(|e| panic!("{}: {e}", example.display()));
        assert!(!c.peers.is_empty(), "{}", example.display());
    }
}

#[test]
fn gateway_example_compiles_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let path = install(&conf("gateway.toml"), dir.path());
    let c = portcullis::config::load_with_env(&path, Vec::new()).unwrap();
    assert_eq!(c.peers.len(), 2);
    assert!(c.peers[1].preshared_key.is_some());
    assert!(c.zones.resolve("group:guests").is_some());
    assert_eq!(c.interface.user.as_deref(), Some("portcullis"));
    assert!(!c.forward.rules.is_empty() && !c.input.rules.is_empty());
    assert_eq!(c.sets.len(), 2);
}

#[test]
fn check_accepts_a_good_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = install(&conf("gateway.toml"), dir.path());
    let out = portcullis(&["check", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("is valid"), "{stdout}");
    assert!(stdout.contains("laptop"), "{stdout}");
    assert!(stdout.contains("listen port 51820"), "{stdout}");

    // PORTCULLIS_CONFIG names the file; PORTCULLIS__* overrides keys.
    let out = portcullis(
        &["check"],
        &[
            ("PORTCULLIS_CONFIG", path.to_str().unwrap()),
            ("PORTCULLIS__INTERFACE__LISTEN_PORT", "51821"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("listen port 51821"));
}

#[test]
fn check_refuses_a_bad_config_and_lists_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = install(&conf("gateway.toml"), dir.path());
    let good = std::fs::read_to_string(&path).unwrap();
    let bad = good
        .replace(
            "dport = [80, 443, \"8000-8999\"]",
            "dport = [80, 443, \"8000-89999\"]",
        )
        .replace("level = \"info\"", "level = \"loud\"")
        .replace("name = \"phone\"", "name = \"laptop\"");
    assert_ne!(bad, good);
    std::fs::write(&path, bad).unwrap();
    let out = portcullis(&["check", "-c", path.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("has 4 problems"), "{stderr}");
    assert!(
        stderr.contains("dport[2]: \"8000-89999\" is invalid"),
        "{stderr}"
    );
    assert!(
        stderr.contains("log.level: \"loud\" is invalid"),
        "{stderr}"
    );
    assert!(
        stderr.contains("peer[1].name: \"laptop\" is invalid: duplicate"),
        "{stderr}"
    );
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(text(&out.stdout).is_empty());

    // A world-readable key file is refused with a clear message.
    let key = dir.path().join("private.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&path, &good).unwrap();
    let out = portcullis(&["check", "-c", path.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("interface.private_key_file"), "{stderr}");
    assert!(
        stderr.contains("readable by others (mode 0644); chmod 600 it"),
        "{stderr}"
    );

    // A bad environment override names the variable.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = portcullis(
        &["check", "-c", path.to_str().unwrap()],
        &[("PORTCULLIS__INTERFACE__MTU", "lots")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("environment variable PORTCULLIS__INTERFACE__MTU"));

    // A missing file.
    let out = portcullis(&["check", "-c", "/nonexistent/gateway.toml"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot read the file"));
}

#[test]
fn every_subcommand_has_help_and_keys_round_trip() {
    for sub in [
        "check",
        "run",
        "trace",
        "genkey",
        "genpsk",
        "pubkey",
        "import",
        "peer-config",
    ] {
        let out = portcullis(&[sub, "--help"], &[]);
        assert_eq!(out.status.code(), Some(0), "{sub}");
        assert!(text(&out.stdout).contains("Usage: portcullis"), "{sub}");
    }
    // genkey | pubkey: a base64 32-byte key in, its public key out.
    let key = text(&portcullis(&["genkey"], &[]).stdout);
    assert_eq!(key.trim().len(), 44, "{key}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("pubkey")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), PRIV.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    // The public key of PRIV, as `wg pubkey` prints it.
    let public = text(&out.stdout);
    assert_eq!(public.trim().len(), 44);
    assert_ne!(public.trim(), PRIV);
    // trace on the example config: the staff laptop may use HTTPS, the guest phone may not.
    let dir = tempfile::tempdir().unwrap();
    let path = install(&conf("gateway.toml"), dir.path());
    let p = path.to_str().unwrap();
    let out = portcullis(
        &[
            "trace",
            "-c",
            p,
            "--from",
            "laptop",
            "tcp",
            "100.64.0.2:40000",
            "203.0.113.2:443",
            "--flags",
            "S",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(
        report.contains("rules:") && report.contains("result:"),
        "{report}"
    );
    let out = portcullis(
        &[
            "trace",
            "-c",
            p,
            "--from",
            "nobody",
            "udp",
            "1.2.3.4:1",
            "5.6.7.8:2",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no such zone"),
        "{}",
        text(&out.stderr)
    );
    let out = portcullis(&["check", "--help"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    assert!(
        help.contains("--config") && help.contains("PORTCULLIS_CONFIG"),
        "{help}"
    );
    assert!(help.contains("/etc/portcullis/gateway.toml"), "{help}");
    let out = portcullis(&["--help"], &[]);
    assert!(text(&out.stdout).contains("peer-config"));
}

/// The systemd unit in conf/: its commands run as written (the pre-start
/// check accepts the example config, `run` takes `--config`, reload is
/// SIGHUP), and `systemd-analyze verify` finds nothing to say about it
/// (unknown keys or sections, bad values). The sandbox itself cannot be
/// exercised here: PID 1 of the test machine is not systemd.
#[test]
fn systemd_unit_commands_run_and_the_unit_verifies() {
    let unit = std::fs::read_to_string(conf("portcullis.service")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = install(&conf("gateway.toml"), dir.path());
    let bin = env!("CARGO_BIN_EXE_portcullis");
    let unit = unit
        .replace("/usr/local/bin/portcullis", bin)
        .replace("/etc/portcullis/gateway.toml", cfg.to_str().unwrap());
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
            .unwrap_or_else(|| panic!("the unit has no {key}="))
            .to_string()
    };
    let words = |v: &str| v.split_whitespace().map(str::to_string).collect::<Vec<_>>();

    let pre = words(&value("ExecStartPre"));
    assert_eq!(pre[0], bin);
    let args: Vec<&str> = pre[1..].iter().map(String::as_str).collect();
    let out = portcullis(&args, &[]);
    assert_eq!(out.status.code(), Some(0), "{pre:?}: {}", text(&out.stderr));

    let start = words(&value("ExecStart"));
    assert_eq!(&start[..2], [bin, "run"]);
    let help = text(&portcullis(&["run", "--help"], &[]).stdout);
    for w in &start[2..] {
        if w.starts_with("--") {
            assert!(help.contains(w.as_str()), "`run` has no {w}: {help}");
        }
    }
    assert_eq!(value("ExecReload"), "/bin/kill -HUP $MAINPID");

    let analyze = Path::new("/usr/bin/systemd-analyze");
    if !analyze.exists() {
        eprintln!("systemd-analyze is not installed: the unit's syntax is not verified");
        return;
    }
    let path = dir.path().join("portcullis.service");
    std::fs::write(&path, &unit).unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let said = text(&out.stderr) + &text(&out.stdout);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
    // the check can fail: a misspelt key is reported
    std::fs::write(&path, unit.replace("NoNewPrivileges=", "NoNewPrivilege=")).unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        text(&out.stderr).contains("Unknown key"),
        "{}",
        text(&out.stderr)
    );
}
