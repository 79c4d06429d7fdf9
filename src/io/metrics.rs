//! The metrics endpoint: a minimal HTTP/1.1 server that answers `GET
//! /metrics` with the Prometheus text exposition the shell renders. One task
//! per connection; the request head must arrive within [`READ_TIMEOUT`] and
//! fit in 8 KiB; the connection closes after the reply. Off by default;
//! bind it to loopback (or a management network): it has no authentication.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_HEAD: usize = 8192;

/// A scrape: the shell answers with the exposition text.
#[derive(Debug)]
pub struct Scrape {
    pub reply: oneshot::Sender<String>,
}

pub async fn serve(listener: tokio::net::TcpListener, tx: mpsc::Sender<Scrape>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(15), serve_one(stream, tx)).await;
        });
    }
}

fn response(status: &str, ctype: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

async fn serve_one(mut s: tokio::net::TcpStream, tx: mpsc::Sender<Scrape>) {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(READ_TIMEOUT, async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(buf.get(..n).unwrap_or_default()),
            }
        }
    })
    .await;
    if read.is_err() {
        return;
    }
    let first = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let first = String::from_utf8_lossy(first);
    let mut parts = first.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let reply = if method != "GET" {
        response("405 Method Not Allowed", "text/plain", "GET only\n")
    } else if path != "/metrics" && path != "/" {
        response("404 Not Found", "text/plain", "try /metrics\n")
    } else {
        let (rtx, rrx) = oneshot::channel();
        match tx.send(Scrape { reply: rtx }).await {
            Err(_) => response("503 Service Unavailable", "text/plain", "shutting down\n"),
            Ok(()) => match rrx.await {
                Ok(body) => response("200 OK", "text/plain; version=0.0.4; charset=utf-8", &body),
                Err(_) => response("503 Service Unavailable", "text/plain", "no reply\n"),
            },
        }
    };
    let _ = s.write_all(reply.as_bytes()).await;
    let _ = s.shutdown().await;
}
