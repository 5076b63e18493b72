//! The relay: newline-delimited JSON-RPC from the local MCP client (stdin)
//! to the tunnel, and from the tunnel to the client (stdout), one flushed
//! line at a time.
//!
//! The relay does not parse MCP: the broker makes the one canonical parse
//! and decides. It only keeps lines whole, so the client never sees half a
//! message.
//!
//! How it ends decides the exit code:
//! - stdin reaches EOF: the tunnel is half-closed (TLS close_notify and a TCP
//!   write shutdown) and the relay keeps reading until the broker closes —
//!   answers to the last requests still arrive. Then success.
//! - the broker closes (or the tunnel fails) while stdin is still open:
//!   [`Error::SessionEnded`].
//! - stdout is gone (the client went away): a local error.

use std::io;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use crate::error::{self, Error};

/// How the tunnel-to-stdout direction ended.
#[derive(Debug)]
enum DownEnd {
    /// The broker closed the tunnel (cleanly or by dropping TCP).
    BrokerClosed,
    /// Reading the tunnel failed otherwise (a TLS alert, a reset).
    TunnelFailed(io::Error),
    /// Writing to stdout failed.
    OutputFailed(io::Error),
}

/// How the stdin-to-tunnel direction ended.
#[derive(Debug)]
enum UpEnd {
    /// stdin reached EOF and the tunnel was half-closed.
    InputDone,
    /// Writing to the tunnel failed: the broker side is going away.
    TunnelFailed(io::Error),
}

/// Relays until the session is over; see the module doc for the outcomes.
pub async fn run<TR, TW, I, O>(
    tunnel_rd: TR,
    tunnel_wr: TW,
    input: I,
    output: O,
) -> Result<(), Error>
where
    TR: AsyncBufRead + Unpin,
    TW: AsyncWrite + Unpin,
    I: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
{
    let up = pump_up(BufReader::new(input), tunnel_wr);
    let down = pump_down(tunnel_rd, output);
    tokio::pin!(up, down);
    let mut up_end: Option<UpEnd> = None;
    let down_end = loop {
        tokio::select! {
            // Polled first so that an EOF on stdin is seen before a close by
            // the broker that it caused.
            biased;
            end = &mut up, if up_end.is_none() => {
                match &end {
                    UpEnd::InputDone => tracing::debug!("stdin reached EOF; tunnel half-closed"),
                    UpEnd::TunnelFailed(e) => tracing::debug!(error = %e, "writing to the tunnel failed"),
                }
                up_end = Some(end);
            }
            end = &mut down => break end,
        }
    };
    tracing::debug!(?down_end, "tunnel side finished");
    let input_done = matches!(up_end, Some(UpEnd::InputDone));
    match down_end {
        DownEnd::BrokerClosed if input_done => Ok(()),
        DownEnd::BrokerClosed => Err(Error::SessionEnded { cause: None }),
        DownEnd::TunnelFailed(e) => {
            let cause = match crate::tunnel::tls_error(&e) {
                Some(rustls::Error::AlertReceived(alert)) => format!("TLS alert {alert:?}"),
                _ => error::chain(&e),
            };
            Err(Error::SessionEnded { cause: Some(cause) })
        }
        DownEnd::OutputFailed(e) => Err(Error::stdio(
            "cannot write to stdout (the MCP client went away?)",
            e,
        )),
    }
}

async fn pump_up<I, TW>(mut input: I, mut tunnel: TW) -> UpEnd
where
    I: AsyncBufRead + Unpin,
    TW: AsyncWrite + Unpin,
{
    let mut line = Vec::with_capacity(8 * 1024);
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line).await {
            Ok(0) => break,
            Ok(_) => {}
            // An unreadable stdin is as good as a closed one.
            Err(e) => {
                tracing::debug!(error = %e, "reading stdin failed; treating it as EOF");
                break;
            }
        }
        // Blank lines are not messages; the broker would only answer them
        // with a parse error nobody can match.
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if !line.ends_with(b"\n") {
            line.push(b'\n');
        }
        if let Err(e) = send(&mut tunnel, &line).await {
            return UpEnd::TunnelFailed(e);
        }
    }
    match tunnel.shutdown().await {
        Ok(()) => UpEnd::InputDone,
        Err(e) => UpEnd::TunnelFailed(e),
    }
}

async fn pump_down<TR, O>(mut tunnel: TR, mut output: O) -> DownEnd
where
    TR: AsyncBufRead + Unpin,
    O: AsyncWrite + Unpin,
{
    let mut line = Vec::with_capacity(8 * 1024);
    loop {
        line.clear();
        match tunnel.read_until(b'\n', &mut line).await {
            Ok(0) => return DownEnd::BrokerClosed,
            Ok(_) => {}
            // TCP closed without a TLS close_notify: the broker is gone all
            // the same. A partial line is dropped: half a message is noise.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return DownEnd::BrokerClosed,
            Err(e) => return DownEnd::TunnelFailed(e),
        }
        if !line.ends_with(b"\n") {
            line.push(b'\n');
        }
        if let Err(e) = send(&mut output, &line).await {
            return DownEnd::OutputFailed(e);
        }
    }
}

async fn send<W: AsyncWrite + Unpin>(w: &mut W, line: &[u8]) -> io::Result<()> {
    w.write_all(line).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, duplex};

    use super::*;
    use crate::error::exit;

    /// The broker's end of an in-memory tunnel.
    fn tunnel() -> (
        BufReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>,
        tokio::io::WriteHalf<tokio::io::DuplexStream>,
        tokio::io::DuplexStream,
    ) {
        let (cli, broker) = duplex(64 * 1024);
        let (rd, wr) = tokio::io::split(cli);
        (BufReader::new(rd), wr, broker)
    }

    #[tokio::test]
    async fn stdin_eof_half_closes_and_waits_for_the_brokers_answers() {
        let (rd, wr, mut broker) = tunnel();
        let input = &b"{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"ping\"}\n\n{\"jsonrpc\":\"2.0\",\"method\":\"x\"}"[..];
        let (mut client_out, out) = duplex(64 * 1024);
        let broker_task = tokio::spawn(async move {
            // Everything from stdin, then EOF (the half-close) ...
            let mut got = Vec::new();
            broker.read_to_end(&mut got).await.unwrap();
            // ... and only then the answer, and the close.
            broker
                .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":0,\"result\":{}}\n")
                .await
                .unwrap();
            broker.shutdown().await.unwrap();
            got
        });
        run(rd, wr, input, out).await.unwrap();
        let got = broker_task.await.unwrap();
        assert_eq!(
            got,
            b"{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"ping\"}\n{\"jsonrpc\":\"2.0\",\"method\":\"x\"}\n"
        );
        let mut shown = String::new();
        client_out.read_to_string(&mut shown).await.unwrap();
        assert_eq!(shown, "{\"jsonrpc\":\"2.0\",\"id\":0,\"result\":{}}\n");
    }

    #[tokio::test]
    async fn broker_closing_first_is_session_ended() {
        let (rd, wr, mut broker) = tunnel();
        // stdin stays open: its writer is kept alive for the whole test.
        let (_stdin_writer, input) = duplex(1024);
        let (mut client_out, out) = duplex(64 * 1024);
        tokio::spawn(async move {
            broker
                .write_all(
                    b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\"}\n{\"partial\":",
                )
                .await
                .unwrap();
            broker.shutdown().await.unwrap();
            // Keep the stream until the relay is done reading.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        });
        let err = run(rd, wr, input, out).await.unwrap_err();
        assert_eq!(err.exit_code(), exit::SESSION_ENDED);
        assert_eq!(err.to_string(), "session ended by the broker");
        let mut shown = Vec::new();
        drop(err);
        client_out.read_buf(&mut shown).await.unwrap();
        // Whole lines only, as they came.
        assert!(shown.starts_with(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\"}\n"));
    }

    #[tokio::test]
    async fn lines_flow_both_ways_while_the_session_lasts() {
        let (rd, wr, broker) = tunnel();
        let (mut client_in, input) = duplex(1024);
        let (client_out, out) = duplex(1024);
        let relay = tokio::spawn(run(rd, wr, input, out));
        // An echoing broker.
        let (b_rd, mut b_wr) = tokio::io::split(broker);
        tokio::spawn(async move {
            let mut lines = BufReader::new(b_rd).lines();
            while let Some(line) = lines.next_line().await.unwrap() {
                b_wr.write_all(format!("{line}\n").as_bytes())
                    .await
                    .unwrap();
            }
            b_wr.shutdown().await.unwrap();
        });
        let mut out_lines = BufReader::new(client_out).lines();
        for i in 0..3 {
            let msg = format!("{{\"jsonrpc\":\"2.0\",\"id\":{i},\"method\":\"ping\"}}\n");
            client_in.write_all(msg.as_bytes()).await.unwrap();
            assert_eq!(
                out_lines.next_line().await.unwrap().unwrap(),
                msg.trim_end()
            );
        }
        drop(client_in);
        relay.await.unwrap().unwrap();
    }
}
