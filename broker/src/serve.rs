//! `mcpgate-broker serve`: load everything, bind the two listeners, run
//! until SIGINT/SIGTERM, then end every session cleanly.
//!
//! Ports: the HTTPS API (`broker.api_listen`) and the mTLS tunnel
//! (`broker.tunnel_listen`) are separate listeners, so the tunnel can
//! require a client certificate on every connection while the API, which
//! people reach before they have one, does not.
//!
//! Once both listeners are bound, one JSON line goes to stdout:
//! `{"api_url":"https://127.0.0.1:8443","tunnel_addr":"127.0.0.1:8444"}` —
//! scripts and tests read the actual ports from it (listen on port 0 to get
//! free ones). Logs go to stderr.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{info, warn};

use crate::api::{self, Peer};
use crate::auth::{Authenticator, FailureLimiter, LocalUsers, TokenIssuer, unix_now};
use crate::ca::{CA_CERT, Ca, SERVER_CERT, SERVER_KEY};
use crate::config::Config;
use crate::proxy::Stage;
use crate::store::Store;

/// Everything a request or tunnel handler needs.
pub struct Broker {
    pub config: Config,
    pub data_dir: PathBuf,
    pub ca: Ca,
    pub tokens: TokenIssuer,
    pub authn: Arc<dyn Authenticator>,
    /// OpenID Providers whose tokens are accepted.
    pub oidc: crate::oidc::Oidc,
    pub limiter: FailureLimiter,
    pub store: Store,
    /// Held calls and access requests.
    pub approvals: crate::approval::Approvals,
    /// The compiled `[[policy]]` rules.
    pub policy: Arc<crate::policy::Policy>,
    /// The compiled `[masking]` profiles.
    pub masking: Arc<crate::mask::Masking>,
    /// `host:port` announced to clients for the tunnel.
    pub tunnel_public_addr: String,
    /// The name clients check on the tunnel's certificate.
    pub tunnel_server_name: String,
    /// One permit per open tunnel (`broker.max_sessions`).
    pub session_slots: Arc<Semaphore>,
    /// Changes once, when the broker starts shutting down.
    pub shutdown: watch::Receiver<bool>,
    /// Writes every session's record.
    pub recorder: Arc<crate::record::Recorder>,
}

impl Broker {
    /// The relay stages every session runs through, in order. (Recording
    /// is not a stage: the relay records what each peer receives, see
    /// `proxy::Tape`.)
    pub fn stages(&self) -> Vec<Arc<dyn Stage>> {
        vec![
            Arc::new(crate::proxy::Log::default()),
            Arc::new(crate::proxy::PolicyStage::new(
                self.policy.clone(),
                self.approvals.clone(),
                self.config.approvals.progress_interval,
            )),
            // Last towards the upstream, so first on the way back: every
            // stage before it sees only masked results.
            Arc::new(crate::proxy::MaskStage::new(
                self.masking.clone(),
                self.approvals.clone(),
            )),
        ]
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_file_iter(path)
        .with_context(|| format!("{}: cannot read certificates", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: invalid certificate PEM", path.display()))
}

fn load_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    // The error names the file only: never the contents.
    PrivateKeyDer::from_pem_file(path)
        .map_err(|_| anyhow::anyhow!("{}: cannot read the private key", path.display()))
}

/// TLS for the API: server certificate only.
pub fn api_tls(dir: &Path) -> anyhow::Result<rustls::ServerConfig> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            load_certs(&dir.join(SERVER_CERT))?,
            load_key(&dir.join(SERVER_KEY))?,
        )
        .context("the broker's TLS certificate and key do not match")?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// TLS for the tunnel: TLS 1.3 only, and a client certificate from the
/// broker CA is required.
pub fn tunnel_tls(dir: &Path) -> anyhow::Result<rustls::ServerConfig> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(&dir.join(CA_CERT))? {
        roots.add(c).context("invalid CA certificate")?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .context("cannot build the client certificate verifier")?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            load_certs(&dir.join(SERVER_CERT))?,
            load_key(&dir.join(SERVER_KEY))?,
        )
        .context("the broker's TLS certificate and key do not match")?;
    Ok(cfg)
}

fn url_host(addr: &SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

/// Where a started broker listens.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Ready {
    pub api_url: String,
    pub tunnel_addr: String,
}

/// The `serve` ready line: one JSON object on stdout.
pub fn print_ready(ready: &Ready) {
    if let Ok(line) = serde_json::to_string(ready) {
        println!("{line}");
    }
}

/// Runs the broker until SIGINT or SIGTERM; `on_ready` is called once both
/// listeners are bound.
pub async fn run(config_path: &Path, on_ready: impl FnOnce(&Ready)) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let data_dir = config.data_dir();
    let ca = Ca::load(&data_dir).context("loading the CA (run `mcpgate-broker init` first)")?;
    let tokens = TokenIssuer::load(&data_dir, config.broker.token_ttl)?;
    let authn: Arc<dyn Authenticator> = Arc::new(LocalUsers::new(config.users.clone())?);
    let oidc = crate::oidc::Oidc::new(&config)?;
    let policy = Arc::new(crate::policy::Policy::compile(&config)?);
    info!(rules = policy.len(), "policy loaded");
    let mask_key = crate::mask::MaskKey::load_or_create(&data_dir)?;
    let masking = Arc::new(
        config
            .masking(mask_key)
            .map_err(|e| anyhow::anyhow!("{}: {e}", config.path.display()))?,
    );
    let store = Store::open(&data_dir)?;
    let aborted = store.recover(unix_now())?;
    if aborted > 0 {
        warn!(
            count = aborted,
            "sessions left open by a previous run were marked aborted"
        );
    }
    let api_listener = TcpListener::bind(config.broker.api_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (broker.api_listen)",
                config.broker.api_listen
            )
        })?;
    let tunnel_listener = TcpListener::bind(config.broker.tunnel_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (broker.tunnel_listen)",
                config.broker.tunnel_listen
            )
        })?;
    let api_addr = api_listener.local_addr()?;
    let tunnel_addr = tunnel_listener.local_addr()?;
    let api_acceptor = TlsAcceptor::from(Arc::new(api_tls(&data_dir)?));
    let tunnel_acceptor = TlsAcceptor::from(Arc::new(tunnel_tls(&data_dir)?));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let webhooks = crate::webhook::Webhooks::start(
        &config.approvals.webhooks,
        config.path.parent().unwrap_or(Path::new(".")),
        shutdown_rx.clone(),
    )?;
    let recorder = Arc::new(start_recorder(&config, &data_dir)?);
    let approvals =
        crate::approval::Approvals::new(store.clone(), webhooks, config.approvals.timeout)
            .recording(recorder.clone());
    let cancelled = approvals.recover().await?;
    if cancelled > 0 {
        warn!(
            count = cancelled,
            "calls held by a previous run were cancelled (their sessions ended)"
        );
    }
    let broker = Arc::new(Broker {
        limiter: FailureLimiter::new(config.login.max_failures, config.login.window),
        tunnel_public_addr: config
            .broker
            .tunnel_public_addr
            .clone()
            .unwrap_or_else(|| url_host(&tunnel_addr)),
        tunnel_server_name: config.broker.public_names[0].clone(),
        session_slots: Arc::new(Semaphore::new(config.broker.max_sessions)),
        shutdown: shutdown_rx,
        recorder,
        masking,
        config,
        data_dir,
        ca,
        tokens,
        authn,
        oidc,
        store,
        approvals,
        policy,
    });

    let tasks = TaskTracker::new();
    let api_task = tokio::spawn(serve_api(broker.clone(), api_listener, api_acceptor));
    let tunnel_task = tokio::spawn(crate::tunnel::serve(
        broker.clone(),
        tunnel_listener,
        tunnel_acceptor,
        tasks.clone(),
    ));
    on_ready(&Ready {
        api_url: format!("https://{}", url_host(&api_addr)),
        tunnel_addr: url_host(&tunnel_addr),
    });
    info!(api = %api_addr, tunnel = %tunnel_addr, "broker ready");
    if !broker.oidc.is_empty() {
        let b = broker.clone();
        tokio::spawn(async move { b.oidc.prefetch().await });
    }
    if let Some(retention) = broker.config.recording.retention {
        tokio::spawn(sweep_records(broker.recorder.clone(), retention));
    }

    wait_for_signal().await;
    info!("shutting down: ending open sessions");
    let _ = shutdown_tx.send(true);
    api_task.abort();
    let _ = tunnel_task.await;
    tasks.close();
    // Each session shuts its upstream down within twice its grace period.
    let grace = broker
        .config
        .servers
        .values()
        .map(|crate::config::Server::Stdio(s)| s.shutdown_grace)
        .max()
        .unwrap_or_default();
    if tokio::time::timeout(grace * 2 + Duration::from_secs(2), tasks.wait())
        .await
        .is_err()
    {
        warn!("some sessions did not end in time");
    }
    // Every ended session's seal is written; nothing else will be.
    let recorder = broker.recorder.clone();
    let _ = tokio::task::spawn_blocking(move || recorder.stop()).await;
    info!("stopped");
    Ok(())
}

/// Opens the record store, seals what a crash left open, and starts the
/// recorder.
fn start_recorder(config: &Config, data_dir: &Path) -> anyhow::Result<crate::record::Recorder> {
    use crate::record::{AuditKey, FileStore, Recorder};
    let key = AuditKey::load_or_create(data_dir)?;
    let dir = crate::record::records_dir(config);
    let store = FileStore::create(&dir)
        .with_context(|| format!("cannot create the records directory {}", dir.display()))?;
    let (recorder, recovered) = Recorder::start(Arc::new(store), key, &config.recording)
        .with_context(|| format!("cannot open the records in {}", dir.display()))?;
    if !recovered.aborted.is_empty() {
        warn!(
            count = recovered.aborted.len(),
            torn_bytes = recovered.torn_bytes,
            "session records left open by a previous run were sealed as aborted"
        );
    }
    info!(dir = %dir.display(), key = %recorder.public().fingerprint(), "recording sessions");
    Ok(recorder)
}

/// Deletes records past `retention`, at start and then hourly; each
/// deletion leaves a signed tombstone in the index.
async fn sweep_records(recorder: Arc<crate::record::Recorder>, retention: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        match recorder.sweep(retention).await {
            Ok(0) => {}
            Ok(n) => info!(count = n, "records past their retention deleted"),
            Err(e) => warn!(error = %e, "retention sweep failed"),
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! { _ = t.recv() => {}, _ = i.recv() => {} }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn serve_api(broker: Arc<Broker>, listener: TcpListener, acceptor: TlsAcceptor) {
    let app = api::router(broker);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "API accept failed");
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(client = %peer, error = %e, "API TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let svc = app.layer(axum::Extension(Peer(peer)));
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    svc.clone().oneshot(req.map(axum::body::Body::new))
                });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await
            {
                tracing::debug!(client = %peer, error = %e, "API connection ended with an error");
            }
        });
    }
}
