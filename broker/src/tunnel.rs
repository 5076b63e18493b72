//! The mTLS tunnel listener: where a session certificate becomes a relay.
//!
//! A connection is admitted only when all of these hold, checked in order:
//! 1. the TLS handshake succeeds with a client certificate that chains to
//!    the broker CA and is within its validity (rustls' WebPKI verifier);
//! 2. the certificate names a session, user and server
//!    ([`CertIdentity`]);
//! 3. the store atomically moves that session from `issued` to `connected`
//!    for this certificate's serial before its deadline — one certificate,
//!    one tunnel;
//! 4. the session's record starts (its start event is durable);
//! 5. the upstream starts.
//!
//! Then the broker writes one [`TunnelStatus`] line and relays MCP until the
//! client leaves, the upstream exits, the session's maximum duration passes
//! or the broker shuts down; the session is then ended for good. Every
//! refusal is logged with the peer address and the reason.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mcpgate_shared::api::TunnelStatus;
use mcpgate_shared::identity::CertIdentity;
use mcpgate_shared::record::{EndState, Start};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};
use x509_parser::extensions::GeneralName;

use crate::auth::unix_now;
use crate::ca::serial_hex;
use crate::config::Server;
use crate::proxy::{self, Limits, SessionContext, Tape};
use crate::record::OnFailure;
use crate::serve::Broker;
use crate::session::ClaimError;
use crate::upstream::Upstream;

/// A TLS handshake must finish within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts tunnels until `shutdown` fires.
pub async fn serve(
    broker: Arc<Broker>,
    listener: TcpListener,
    acceptor: TlsAcceptor,
    tasks: TaskTracker,
) {
    let mut shutdown = broker.shutdown.clone();
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "tunnel accept failed");
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let broker = broker.clone();
        let acceptor = acceptor.clone();
        let span = info_span!("tunnel", peer = %peer);
        tasks.spawn(handle(broker, acceptor, tcp, peer).instrument(span));
    }
}

async fn refuse<W: AsyncWrite + Unpin>(stream: &mut W, reason: &str) {
    let status = TunnelStatus::Refused {
        reason: reason.to_owned(),
    };
    if let Ok(mut line) = serde_json::to_vec(&status) {
        line.push(b'\n');
        let _ = stream.write_all(&line).await;
        let _ = stream.shutdown().await;
    }
}

async fn handle(broker: Arc<Broker>, acceptor: TlsAcceptor, tcp: TcpStream, peer: SocketAddr) {
    let mut tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            warn!(reason = %e, "tunnel refused: TLS handshake failed");
            return;
        }
        Err(_) => {
            warn!("tunnel refused: TLS handshake timed out");
            return;
        }
    };
    let Some((identity, serial)) = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|der| read_identity(der.as_ref()))
    else {
        warn!("tunnel refused: no client certificate");
        refuse(&mut tls, "no client certificate").await;
        return;
    };
    let (identity, serial) = match (identity, serial) {
        (Ok(id), serial) => (id, serial),
        (Err(e), _) => {
            warn!(reason = %e, "tunnel refused: the certificate names no session");
            refuse(&mut tls, &e).await;
            return;
        }
    };
    let session = identity.session.clone();
    let span =
        info_span!("session", session = %session, user = %identity.user, server = %identity.server);
    async move {
        let Ok(permit) = broker.session_slots.clone().try_acquire_owned() else {
            warn!("tunnel refused: the broker is at max_sessions");
            refuse(
                &mut tls,
                "the broker has too many open sessions; try again later",
            )
            .await;
            return;
        };
        let peer_text = peer.to_string();
        let id2 = session.clone();
        let claimed = broker
            .store
            .run(move |s| s.claim(&id2, &serial, &peer_text, unix_now()))
            .await
            .unwrap_or_else(|e| Err(ClaimError::Store(e.to_string())));
        let record = match claimed {
            Ok(r) if r.user == identity.user && r.server == identity.server => r,
            Ok(_) => {
                // Cannot happen with certificates this CA signed; end the
                // session rather than trust either side.
                end(&broker, &session, "certificate identity mismatch").await;
                warn!(reason = %ClaimError::IdentityMismatch, "tunnel refused");
                refuse(&mut tls, &ClaimError::IdentityMismatch.to_string()).await;
                return;
            }
            Err(e) => {
                warn!(reason = %e, "tunnel refused");
                refuse(&mut tls, &e.to_string()).await;
                return;
            }
        };
        let Some(Server::Stdio(spec)) = broker.config.servers.get(&record.server) else {
            end(&broker, &session, "server removed from the config").await;
            refuse(&mut tls, "the server is no longer configured").await;
            return;
        };
        // The record starts before anything reaches the upstream.
        let start = Start {
            user: record.user.clone(),
            issuer: record.issuer.clone(),
            roles: record.roles.clone(),
            server: record.server.clone(),
            client_addr: record.client_addr.clone(),
            tunnel_peer: peer.to_string(),
            cert_serial: record.cert_serial.clone(),
            created_at: record.created_at,
        };
        let tape = match broker.recorder.open(&session, start).await {
            Ok(()) => Some(Arc::new(Tape::new(broker.recorder.clone(), session.clone()))),
            Err(e) if broker.recorder.on_failure() == OnFailure::FailOpenWithAlarm => {
                tracing::error!(error = %e, "ALARM: the session is not recorded (on_failure = fail-open-with-alarm)");
                None
            }
            Err(e) => {
                warn!(error = %e, "tunnel refused: the session cannot be recorded");
                end(&broker, &session, "the session could not be recorded").await;
                refuse(
                    &mut tls,
                    "the broker cannot record this session; try again later",
                )
                .await;
                return;
            }
        };
        let upstream = match Upstream::spawn(&record.server, spec, &broker.data_dir, &session) {
            Ok(u) => u,
            Err(e) => {
                warn!(error = %e, "upstream failed to start");
                end(&broker, &session, "upstream failed to start").await;
                close_record(&broker, &session, tape.is_some(), "upstream failed to start").await;
                refuse(
                    &mut tls,
                    &format!("the upstream server failed to start: {e}"),
                )
                .await;
                return;
            }
        };
        let ready = TunnelStatus::Ready {
            session_id: session.clone(),
            server: record.server.clone(),
        };
        let mut line = serde_json::to_vec(&ready).unwrap_or_default();
        line.push(b'\n');
        if let Err(e) = tls.write_all(&line).await {
            warn!(error = %e, "tunnel closed before it was ready");
        }
        info!(tunnel_peer = %peer, "tunnel open");
        let ctx = SessionContext {
            session: session.clone(),
            user: record.user.clone(),
            server: record.server.clone(),
            roles: record.roles.clone(),
        };
        let limits = Limits {
            max_message_bytes: broker.config.broker.max_message_bytes,
        };
        let deadline = tokio::time::Instant::now() + broker.config.broker.session_max_duration;
        let mut shutdown = broker.shutdown.clone();
        let stages = broker.stages();
        let recorded = tape.is_some();
        let reason = proxy::relay(
            tls,
            upstream,
            ctx,
            limits,
            stages,
            tape,
            deadline,
            async move {
                let _ = shutdown.changed().await;
            },
        )
        .await;
        end(&broker, &session, &reason.to_string()).await;
        close_record(&broker, &session, recorded, &reason.to_string()).await;
        info!(reason = %reason, "session ended");
        drop(permit);
    }
    .instrument(span)
    .await;
}

async fn end(broker: &Broker, session: &mcpgate_shared::names::SessionId, reason: &str) {
    let id = session.clone();
    let reason = reason.to_owned();
    match broker
        .store
        .run(move |s| s.end(&id, &reason, unix_now()))
        .await
    {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "could not record the end of the session"),
        Err(e) => warn!(error = %e, "could not record the end of the session"),
    }
}

/// Ends a session's record: its end event, the signed seal, the index.
async fn close_record(
    broker: &Broker,
    session: &mcpgate_shared::names::SessionId,
    recorded: bool,
    reason: &str,
) {
    if !recorded {
        return;
    }
    if let Err(e) = broker
        .recorder
        .close(session, EndState::Closed, reason)
        .await
    {
        tracing::error!(error = %e, "ALARM: the session record could not be sealed");
    }
}

/// The identity and hex serial of a client certificate.
fn read_identity(der: &[u8]) -> (Result<CertIdentity, String>, String) {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return (Err("unreadable certificate".into()), String::new());
    };
    let serial = serial_hex(cert.raw_serial());
    let uris: Vec<&str> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(u) => Some(*u),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    (
        CertIdentity::from_uris(uris).map_err(|e| e.to_string()),
        serial,
    )
}
