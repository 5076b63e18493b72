//! A webhook receiver on 127.0.0.1: answers every POST with 200 and hands
//! each JSON body to the test, so it can see what the broker announced.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// A running receiver; it stops when dropped.
pub struct HookReceiver {
    pub url: String,
    bodies: mpsc::UnboundedReceiver<Value>,
    task: tokio::task::JoinHandle<()>,
}

impl HookReceiver {
    pub async fn start() -> HookReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let (tx, bodies) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let (r, mut w) = stream.into_split();
                    let mut r = BufReader::new(r);
                    // Keep-alive: one request after another on a connection.
                    loop {
                        let mut length = 0usize;
                        let mut line = String::new();
                        let mut first = true;
                        loop {
                            line.clear();
                            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            let l = line.trim_end();
                            if l.is_empty() && !first {
                                break;
                            }
                            first = false;
                            if let Some((k, v)) = l.split_once(':')
                                && k.eq_ignore_ascii_case("content-length")
                            {
                                length = v.trim().parse().unwrap_or(0);
                            }
                        }
                        let mut body = vec![0; length];
                        if r.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        if let Ok(v) = serde_json::from_slice(&body) {
                            let _ = tx.send(v);
                        }
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                        if w.write_all(ok).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        HookReceiver { url, bodies, task }
    }

    /// The next body posted, waiting at most `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Value {
        tokio::time::timeout(timeout, self.bodies.recv())
            .await
            .unwrap_or_else(|_| panic!("no webhook within {timeout:?}"))
            .expect("the receiver is running")
    }
}

impl Drop for HookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
