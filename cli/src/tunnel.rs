//! The session tunnel: mTLS to the broker's tunnel listener with the
//! session certificate, then the broker's one status line
//! ([`TunnelStatus`]) before any MCP message.
//!
//! The tunnel trusts only the CA the broker named in the session answer,
//! and the client certificate's key exists only in this process's memory.
//!
//! With TLS 1.3 the client's handshake finishes before the broker has
//! checked the client certificate, so a rejected certificate surfaces as an
//! alert (or a dropped connection) while reading the status line; both are
//! reported as "certificate rejected".

use std::io;
use std::sync::Arc;
use std::time::Duration;

use mcpgate_shared::api::{SessionResponse, TunnelStatus};
use rustls::ClientConfig;
use rustls_pki_types::{PrivateKeyDer, ServerName};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::error::{self, Error, one_line};

/// TCP connect plus TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// The broker may start the upstream server before it says "ready".
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(120);
/// A status line is a small JSON object; anything longer is not one.
const STATUS_LINE_LIMIT: u64 = 64 * 1024;

/// The rustls client configuration for one session: trust only the
/// session's CA, present the session certificate with `key`.
pub fn client_config(
    session: &SessionResponse,
    key: PrivateKeyDer<'static>,
) -> Result<ClientConfig, Error> {
    let roots = crate::tls::roots(&session.ca_pem)
        .map_err(|e| Error::Broker(format!("the session's CA certificate is unusable: {e}")))?;
    let chain = crate::tls::certificates(&session.certificate_pem)
        .map_err(|e| Error::Broker(format!("the session certificate is unusable: {e}")))?;
    ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal("cannot set up TLS", e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| {
            Error::Broker(format!(
                "the session certificate does not match the session key: {e}"
            ))
        })
}

/// Connects to the tunnel listener and completes the TLS handshake.
#[tracing::instrument(level = "debug", skip_all, fields(addr = %session.tunnel_addr))]
pub async fn open(
    session: &SessionResponse,
    key: PrivateKeyDer<'static>,
) -> Result<TlsStream<TcpStream>, Error> {
    let config = client_config(session, key)?;
    let name = ServerName::try_from(session.tunnel_server_name.clone()).map_err(|e| {
        Error::Broker(format!(
            "the broker named the tunnel {:?}, which is not a host name or address: {e}",
            one_line(&session.tunnel_server_name, 100)
        ))
    })?;
    let addr = &session.tunnel_addr;
    let unreachable = |cause: String| Error::Unreachable {
        url: format!("tunnel {}", one_line(addr, 100)),
        cause,
    };
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr.as_str()))
        .await
        .map_err(|_| {
            unreachable(format!(
                "no connection within {}s",
                CONNECT_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| unreachable(error::chain(&e)))?;
    // MCP messages are small and interactive: do not wait to fill packets.
    let _ = tcp.set_nodelay(true);
    tokio::time::timeout(
        CONNECT_TIMEOUT,
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .map_err(|_| Error::TunnelTls {
        cause: format!("no TLS handshake within {}s", CONNECT_TIMEOUT.as_secs()),
    })?
    .map_err(|e| handshake_error(&e))
}

/// Reads the broker's first line and checks it says "ready" for this
/// session.
pub async fn read_status<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    session: &SessionResponse,
) -> Result<(), Error> {
    let mut line = Vec::with_capacity(256);
    let mut limited = (&mut *reader).take(STATUS_LINE_LIMIT);
    let read = limited.read_until(b'\n', &mut line);
    match tokio::time::timeout(STATUS_TIMEOUT, read).await {
        Err(_) => {
            return Err(Error::TunnelRefused {
                reason: format!(
                    "no answer on the tunnel within {}s",
                    STATUS_TIMEOUT.as_secs()
                ),
            });
        }
        Ok(Err(e)) => return Err(status_read_error(&e)),
        Ok(Ok(0)) => {
            return Err(Error::CertificateRejected {
                cause: "the broker closed the tunnel without confirming the session".into(),
            });
        }
        Ok(Ok(_)) => {}
    }
    if !line.ends_with(b"\n") {
        return Err(Error::Broker(
            "the broker's tunnel status line is cut short or too long".into(),
        ));
    }
    let status: TunnelStatus = serde_json::from_slice(&line).map_err(|_| {
        Error::Broker(format!(
            "the broker's first tunnel line is not a status line: {}",
            one_line(&String::from_utf8_lossy(&line), 120)
        ))
    })?;
    match status {
        TunnelStatus::Ready { session_id, server }
            if session_id == session.session_id && server == session.server =>
        {
            Ok(())
        }
        TunnelStatus::Ready { session_id, server } => Err(Error::Broker(format!(
            "the tunnel opened session {session_id} for {server}, not session {} for {}",
            session.session_id, session.server
        ))),
        TunnelStatus::Refused { reason } => Err(Error::TunnelRefused {
            reason: one_line(&reason, 300),
        }),
    }
}

/// The rustls error inside an I/O error from tokio-rustls, if any.
pub fn tls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

fn handshake_error(e: &io::Error) -> Error {
    match tls_error(e) {
        Some(rustls::Error::AlertReceived(alert)) => Error::CertificateRejected {
            cause: format!("TLS alert {alert:?} during the handshake"),
        },
        Some(tls) => Error::TunnelTls {
            cause: one_line(&tls.to_string(), 300),
        },
        None => Error::TunnelTls {
            cause: error::chain(e),
        },
    }
}

fn status_read_error(e: &io::Error) -> Error {
    match tls_error(e) {
        Some(rustls::Error::AlertReceived(alert)) => Error::CertificateRejected {
            cause: format!("TLS alert {alert:?}"),
        },
        Some(tls) => Error::TunnelTls {
            cause: one_line(&tls.to_string(), 300),
        },
        None => match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => Error::CertificateRejected {
                cause: format!(
                    "the broker dropped the connection before confirming the session ({})",
                    error::chain(e)
                ),
            },
            _ => Error::TunnelTls {
                cause: error::chain(e),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use rcgen::KeyPair;
    use rustls_pki_types::PrivatePkcs8KeyDer;
    use tokio::io::{AsyncWriteExt, BufReader};

    use super::*;
    use crate::error::exit;
    use crate::testing::TestPki;

    fn client_key() -> (KeyPair, String) {
        crate::connect::session_key(&"alice".parse().unwrap()).unwrap()
    }

    fn der(key: &KeyPair) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()))
    }

    async fn ready(mut tls: tokio_rustls::server::TlsStream<TcpStream>) {
        tls.write_all(
            b"{\"status\":\"ready\",\"session_id\":\"0b6c9a58-5f7e-4c53-9d0e-3f0c1b2a4d5e\",\"server\":\"demo\"}\n",
        )
        .await
        .unwrap();
        tls.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn ready_status_opens_the_tunnel() {
        let pki = TestPki::new();
        let addr = pki.listen_tunnel(&pki.ca_pem(), ready).await;
        let (key, csr) = client_key();
        let session = pki.session(&csr, addr);
        let stream = open(&session, der(&key)).await.unwrap();
        let mut reader = BufReader::new(stream);
        read_status(&mut reader, &session).await.unwrap();
    }

    #[tokio::test]
    async fn a_certificate_the_broker_does_not_trust_is_reported_as_rejected() {
        let pki = TestPki::new();
        let other = TestPki::new();
        // The listener trusts only another CA's client certificates.
        let addr = pki.listen_tunnel(&other.ca_pem(), ready).await;
        let (key, csr) = client_key();
        let session = pki.session(&csr, addr);
        let result = match open(&session, der(&key)).await {
            // TLS 1.3: the handshake "succeeds"; the alert comes on first read.
            Ok(stream) => read_status(&mut BufReader::new(stream), &session).await,
            Err(e) => Err(e),
        };
        let err = result.unwrap_err();
        assert_eq!(err.exit_code(), exit::TUNNEL_REFUSED, "{err}");
        assert!(err.to_string().contains("certificate rejected"), "{err}");
    }

    #[tokio::test]
    async fn refused_status_carries_the_brokers_reason() {
        let pki = TestPki::new();
        let addr = pki
            .listen_tunnel(&pki.ca_pem(), |mut tls| async move {
                let _ = tls
                    .write_all(b"{\"status\":\"refused\",\"reason\":\"session already used\"}\n")
                    .await;
                let _ = tls.shutdown().await;
            })
            .await;
        let (key, csr) = client_key();
        let session = pki.session(&csr, addr);
        let stream = open(&session, der(&key)).await.unwrap();
        let err = read_status(&mut BufReader::new(stream), &session)
            .await
            .unwrap_err();
        assert_eq!(err.exit_code(), exit::TUNNEL_REFUSED);
        assert!(err.to_string().contains("session already used"), "{err}");
    }

    #[tokio::test]
    async fn an_untrusted_tunnel_certificate_is_refused_by_the_cli() {
        let pki = TestPki::new();
        let addr = pki.listen_tunnel(&pki.ca_pem(), ready).await;
        let (key, csr) = client_key();
        let mut session = pki.session(&csr, addr);
        // The session names a different CA than the one the tunnel uses.
        session.ca_pem = TestPki::new().ca_pem();
        let err = open(&session, der(&key)).await.unwrap_err();
        assert_eq!(err.exit_code(), exit::TUNNEL_REFUSED, "{err}");
    }

    #[tokio::test]
    async fn status_for_another_session_is_not_accepted() {
        let line = b"{\"status\":\"ready\",\"session_id\":\"other\",\"server\":\"demo\"}\n";
        let pki = TestPki::new();
        let (_, csr) = client_key();
        let session = pki.session(&csr, "127.0.0.1:1".parse().unwrap());
        let err = read_status(&mut &line[..], &session).await.unwrap_err();
        assert_eq!(err.exit_code(), exit::OTHER);
        let err = read_status(&mut &b"hello\n"[..], &session)
            .await
            .unwrap_err();
        assert_eq!(err.exit_code(), exit::OTHER);
        let err = read_status(&mut &b""[..], &session).await.unwrap_err();
        assert_eq!(err.exit_code(), exit::TUNNEL_REFUSED);
    }
}
