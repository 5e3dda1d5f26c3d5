//! Watchers: peers' certificate expiry, and the CRL file (re-read when it changes).

use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info};

use super::{identity, Node, TrustState};
use crate::link::CloseCode;

pub(super) const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Closes connections of peers whose certificate has expired since they connected.
pub(super) async fn watch_expiry(node: Arc<Node>) {
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    loop {
        tick.tick().await;
        let now = time::OffsetDateTime::now_utc();
        node.peers
            .close_where(CloseCode::CertificateInvalidated, |cert| {
                (now > cert.cert().not_after).then(|| "certificate expired".to_owned())
            });
    }
}

/// Files watched for changes by their modification time, every [`WATCH_INTERVAL`].
pub(super) struct FileWatch {
    paths: Vec<std::path::PathBuf>,
    last: Vec<Option<std::time::SystemTime>>,
    tick: tokio::time::Interval,
}

impl FileWatch {
    pub(super) fn new(paths: Vec<std::path::PathBuf>) -> FileWatch {
        let mut watch = FileWatch {
            last: Vec::new(),
            paths,
            tick: tokio::time::interval(WATCH_INTERVAL),
        };
        watch.last = watch.stamps();
        watch
    }

    fn stamps(&self) -> Vec<Option<std::time::SystemTime>> {
        self.paths
            .iter()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }

    /// Returns once any of the files changed (appeared, went or was written) since the
    /// last time.
    pub(super) async fn changed(&mut self) {
        loop {
            self.tick.tick().await;
            let now = self.stamps();
            if now != self.last {
                self.last = now;
                return;
            }
        }
    }
}

/// Re-reads the CRL when its file changes: new handshakes use it at once, and live
/// connections of newly revoked peers are closed.
pub(super) async fn watch_crl(node: Arc<Node>, path: std::path::PathBuf) {
    let mut files = FileWatch::new(vec![path.clone()]);
    loop {
        files.changed().await;
        let ca = node.trust().ca;
        let crl = match identity::load_crl(&path, &ca) {
            Ok(crl) => crl,
            Err(e) => {
                error!(error = %format!("{e:#}"), "keeping the previous CRL");
                continue;
            }
        };
        let state = TrustState {
            rustls: identity::trust_of(&ca, Some(&crl)),
            ca,
            crl: Some(crl.clone()),
        };
        if let Err(e) = node.set_tls(&state.rustls, &node.identity()) {
            error!(error = %format!("{e:#}"), "keeping the previous CRL");
            continue;
        }
        *node.trust.write().unwrap_or_else(|p| p.into_inner()) = state;
        info!(
            number = crl.number,
            revoked = crl.revoked.len(),
            "CRL reloaded"
        );
        node.peers
            .close_where(CloseCode::CertificateInvalidated, |cert| {
                crl.is_revoked(&cert.cert().serial)
                    .then(|| "certificate revoked".to_owned())
            });
    }
}

/// Re-reads the web certificates of camouflage mode when their files change (certbot
/// renewing them, say): new handshakes use them at once.
pub(super) async fn watch_web_certs(certs: Arc<crate::camouflage::WebCerts>) {
    let mut files = FileWatch::new(certs.paths());
    loop {
        files.changed().await;
        match certs.reload() {
            Ok(()) => info!(names = ?certs.names(), "web certificates reloaded"),
            Err(e) => error!(error = %format!("{e:#}"), "keeping the previous web certificates"),
        }
    }
}
