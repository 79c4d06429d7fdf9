//! The control socket: server side (a Unix listener served by small tokio
//! tasks that pass each request line to the shell's loop) and the client
//! `portcullis ctl` uses.
//!
//! Permissions: the socket is created by the still-privileged process
//! (before `interface.user` takes over) with mode 0600, or 0660 and the
//! configured group; the directory is created 0755 if missing. The listening
//! fd survives the privilege drop, so a root-owned socket keeps working; the
//! kernel checks write permission on the socket file at `connect`, which is
//! what refuses unprivileged users (EACCES). The socket file is not removed
//! at exit when privileges were dropped (the directory is root's); a stale
//! socket is replaced at the next start after checking nobody answers on it.
//!
//! Robustness: each connection has its own task; a client must send its line
//! within [`READ_TIMEOUT`] (a silent client only holds its own task, then is
//! dropped); at most [`MAX_CLIENTS`] are served at once (more get a "busy"
//! reply). The loop that owns the gateway state only sees complete lines.

use crate::control::{Request, Response, MAX_REQUEST};
use anyhow::Context;
use std::io::{BufRead, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

/// Time a client has to send its request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time the shell has to answer (a reload reads and compiles a config).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections served at once.
pub const MAX_CLIENTS: usize = 16;

/// A request line for the shell, with where to send the reply line.
#[derive(Debug)]
pub struct CtlMsg {
    pub line: Vec<u8>,
    pub reply: oneshot::Sender<String>,
}

fn lookup_group(name: &str) -> anyhow::Result<u32> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    let c = std::ffi::CString::new(name).context("group name")?;
    // SAFETY: getgrnam returns a pointer into static storage or null; we read
    // gr_gid immediately, single-threaded (before the runtime starts).
    let gr = unsafe { libc::getgrnam(c.as_ptr()) };
    if gr.is_null() {
        anyhow::bail!("control.group: no group named {name:?}");
    }
    // SAFETY: non-null pointer from getgrnam.
    Ok(unsafe { (*gr).gr_gid })
}

/// Creates the control socket (mode 0600, or 0660 with `group`). Refuses to
/// replace a socket another process answers on.
pub fn bind(path: &Path, group: Option<&str>) -> anyhow::Result<std::os::unix::net::UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir).with_context(|| {
                format!("creating the control socket directory {}", dir.display())
            })?;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
        }
    }
    if let Ok(md) = std::fs::symlink_metadata(path) {
        if !md.file_type().is_socket() {
            anyhow::bail!(
                "control socket path {} exists and is not a socket; refusing to replace it",
                path.display()
            );
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "another process answers on the control socket {} (is portcullis already running?)",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale control socket {}", path.display()))?;
    }
    // No window where the socket is open to others: umask for the bind.
    // SAFETY: umask has no preconditions; the process is single-threaded here.
    let old = unsafe { libc::umask(0o177) };
    let l = std::os::unix::net::UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let l = l.with_context(|| format!("binding the control socket {}", path.display()))?;
    if let Some(g) = group {
        let gid = lookup_group(g)?;
        std::os::unix::fs::chown(path, None, Some(gid))
            .with_context(|| format!("chgrp {g} {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    } else {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Accepts connections forever, one task each.
pub async fn serve(listener: tokio::net::UnixListener, tx: mpsc::Sender<CtlMsg>) {
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if active.load(Ordering::Relaxed) >= MAX_CLIENTS {
            tokio::spawn(async move {
                let mut s = stream;
                let _ = s
                    .write_all(
                        Response::err("busy: too many control clients")
                            .to_line()
                            .as_bytes(),
                    )
                    .await;
            });
            continue;
        }
        active.fetch_add(1, Ordering::Relaxed);
        let tx = tx.clone();
        let active = Arc::clone(&active);
        tokio::spawn(async move {
            serve_one(stream, tx).await;
            active.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn serve_one(stream: tokio::net::UnixStream, tx: mpsc::Sender<CtlMsg>) {
    let (rd, mut wr) = stream.into_split();
    let mut rd = tokio::io::BufReader::new(rd.take(MAX_REQUEST as u64 + 1));
    let mut line = Vec::new();
    let reply = match tokio::time::timeout(READ_TIMEOUT, rd.read_until(b'\n', &mut line)).await {
        Err(_) => Response::err("timed out waiting for the request").to_line(),
        Ok(Err(e)) => Response::err(format!("read error: {e}")).to_line(),
        Ok(Ok(_)) => {
            let (rtx, rrx) = oneshot::channel();
            if tx.send(CtlMsg { line, reply: rtx }).await.is_err() {
                Response::err("gateway is shutting down").to_line()
            } else {
                match tokio::time::timeout(REPLY_TIMEOUT, rrx).await {
                    Ok(Ok(r)) => r,
                    _ => Response::err("no reply from the gateway").to_line(),
                }
            }
        }
    };
    let _ = tokio::time::timeout(READ_TIMEOUT, wr.write_all(reply.as_bytes())).await;
    let _ = wr.shutdown().await;
}

/// Client-side errors, with what to do about them.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("permission denied opening the control socket {0}: run ctl as root, or as a member of the group set in control.group")]
    Permission(PathBuf),
    #[error("no control socket at {0}: is the gateway running? (see control.socket in its config, or pass --socket)")]
    NotFound(PathBuf),
    #[error(
        "nothing answers on the control socket {0}: the gateway is not running (stale socket)"
    )]
    Refused(PathBuf),
    #[error("control socket {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("control socket {0}: the reply is not valid: {1}")]
    BadReply(PathBuf, String),
}

/// Sends one request and reads the reply (blocking; for `portcullis ctl`).
pub fn request(path: &Path, req: &Request, timeout: Duration) -> Result<Response, ClientError> {
    use std::io::ErrorKind;
    let p = || path.to_path_buf();
    let mut s = std::os::unix::net::UnixStream::connect(path).map_err(|e| match e.kind() {
        ErrorKind::PermissionDenied => ClientError::Permission(p()),
        ErrorKind::NotFound => ClientError::NotFound(p()),
        ErrorKind::ConnectionRefused => ClientError::Refused(p()),
        _ => ClientError::Io(p(), e),
    })?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| ClientError::Io(p(), e))?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| ClientError::Io(p(), e))?;
    let mut line =
        serde_json::to_string(req).map_err(|e| ClientError::BadReply(p(), e.to_string()))?;
    line.push('\n');
    s.write_all(line.as_bytes())
        .map_err(|e| ClientError::Io(p(), e))?;
    let mut r = std::io::BufReader::new(s);
    let mut out = String::new();
    r.read_line(&mut out).map_err(|e| ClientError::Io(p(), e))?;
    serde_json::from_str(out.trim_end())
        .map_err(|e| ClientError::BadReply(p(), format!("{e}: {out:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A silent client does not block others; a malformed one gets an error.
    #[test]
    fn silent_client_does_not_block_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        let std_l = bind(&path, None).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // a second bind is refused while someone answers
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let path2 = path.clone();
        rt.block_on(async move {
            let l = tokio::net::UnixListener::from_std(std_l).unwrap();
            let (tx, mut rx) = mpsc::channel::<CtlMsg>(8);
            tokio::spawn(serve(l, tx));
            // the "shell": echoes the handler's reply
            tokio::spawn(async move {
                while let Some(m) = rx.recv().await {
                    let r = match crate::control::parse(&m.line) {
                        Ok(_) => Response::ok("pong"),
                        Err(r) => r,
                    };
                    let _ = m.reply.send(r.to_line());
                }
            });
            // a silent client holds a connection open
            let _silent = tokio::net::UnixStream::connect(&path2).await.unwrap();
            let p = path2.clone();
            let t = std::time::Instant::now();
            let r = tokio::task::spawn_blocking(move || {
                request(
                    &p,
                    &Request::new(crate::control::Command::Status),
                    Duration::from_secs(3),
                )
            })
            .await
            .unwrap()
            .unwrap();
            assert!(r.ok);
            assert!(
                t.elapsed() < Duration::from_secs(2),
                "blocked by the silent client"
            );
            // malformed
            let mut s = tokio::net::UnixStream::connect(&path2).await.unwrap();
            s.write_all(b"{nonsense\n").await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            let r: Response = serde_json::from_str(out.trim_end()).unwrap();
            assert!(!r.ok && r.error.unwrap().contains("malformed"));
        });
        drop(rt); // closes the listener
        assert!(
            bind(&path, None).is_ok(),
            "stale socket replaced once nobody answers"
        );
        let e = request(
            &dir.path().join("none.sock"),
            &Request::new(crate::control::Command::Status),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(matches!(e, ClientError::NotFound(_)));
    }
}
