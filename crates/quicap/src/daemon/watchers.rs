//! Watchers: peers' certificate expiry, and the CRL file (re-read when it changes).

use std::sync::Arc;
use std::time::Duration;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::sync::mpsc;
use tracing::{error, info};

use super::{identity, Node, TrustState};
use crate::link::CloseCode;

pub(super) const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// The longest the expiry watch sleeps: a clock stepped forward is noticed within it.
const EXPIRY_RECHECK: Duration = Duration::from_secs(600);

/// Closes connections of peers whose certificate has expired since they connected: it
/// sleeps until the earliest certificate ends (or a peer comes or goes), not ticking.
pub(super) async fn watch_expiry(node: Arc<Node>) {
    loop {
        let now = time::OffsetDateTime::now_utc();
        node.peers
            .close_where(CloseCode::CertificateInvalidated, |cert| {
                (now > cert.cert().not_after).then(|| "certificate expired".to_owned())
            });
        let wait = match node.peers.earliest_not_after() {
            // Just past the end: `now > not_after` holds then.
            Some(end) if end >= now => {
                let left = (end - now).unsigned_abs() + Duration::from_millis(10);
                left.min(EXPIRY_RECHECK)
            }
            // Expired and closed above; its session ends at once.
            Some(_) => WATCH_INTERVAL,
            None => EXPIRY_RECHECK,
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = node.peers_moved.notified() => {}
        }
    }
}

/// Files watched for changes by their modification time. Their directories are
/// watched with inotify (a thread of the watch's own waits for the events), so an idle
/// node does not wake for them; every [`SAFETY_POLL`] (every [`WATCH_INTERVAL`] where
/// inotify is unavailable) the times are compared anyway, for file systems that send
/// no events.
pub(super) struct FileWatch {
    paths: Vec<std::path::PathBuf>,
    last: Vec<Option<std::time::SystemTime>>,
    events: Option<mpsc::Receiver<()>>,
    tick: tokio::time::Interval,
}

/// How often watched files are compared when inotify reports them.
const SAFETY_POLL: Duration = Duration::from_secs(60);
/// How long after an event the files are compared: a writer's next steps (a rename
/// after a write, the key after the certificate) come within it.
const SETTLE: Duration = Duration::from_millis(50);

impl FileWatch {
    pub(super) fn new(paths: Vec<std::path::PathBuf>) -> FileWatch {
        let events = watch_dirs(&paths);
        let mut watch = FileWatch {
            last: Vec::new(),
            paths,
            tick: poll(if events.is_some() {
                SAFETY_POLL
            } else {
                WATCH_INTERVAL
            }),
            events,
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
            match &mut self.events {
                Some(events) => {
                    tokio::select! {
                        event = events.recv() => match event {
                            Some(()) => {
                                tokio::time::sleep(SETTLE).await;
                                while events.try_recv().is_ok() {}
                            }
                            None => {
                                // The watching thread ended: back to polling.
                                self.events = None;
                                self.tick = poll(WATCH_INTERVAL);
                            }
                        },
                        _ = self.tick.tick() => {}
                    }
                }
                None => {
                    self.tick.tick().await;
                }
            }
            let now = self.stamps();
            if now != self.last {
                self.last = now;
                return;
            }
        }
    }
}

/// A tick every `period`, the first one a period from now.
fn poll(period: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// Events of the directories of `paths` (files written, moved, created or removed, a
/// symlink replaced included), from inotify on a thread of their own; `None` if that
/// cannot be set up.
fn watch_dirs(paths: &[std::path::PathBuf]) -> Option<mpsc::Receiver<()>> {
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC).ok()?;
    let flags = AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_ATTRIB;
    for path in paths {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => std::path::Path::new("."),
        };
        inotify.add_watch(dir, flags).ok()?;
    }
    let (tx, rx) = mpsc::channel(1);
    std::thread::Builder::new()
        .name("quicap-watch".into())
        .spawn(move || loop {
            match inotify.read_events() {
                Ok(_) => {
                    // Full: a wake-up is pending already.
                    if let Err(mpsc::error::TrySendError::Closed(())) = tx.try_send(()) {
                        return;
                    }
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return,
            }
        })
        .ok()?;
    Some(rx)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_watch_sees_a_file_written_or_replaced_without_polling_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.crt");
        std::fs::write(&path, "one").unwrap();
        let mut watch = FileWatch::new(vec![path.clone()]);
        assert!(watch.events.is_some(), "inotify is available here");
        // Nothing changed: no answer.
        let quiet = tokio::time::timeout(Duration::from_millis(300), watch.changed()).await;
        assert!(quiet.is_err());
        // Written in place, then replaced by a rename, as renewals do.
        let changed = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            std::fs::write(&path, "two").unwrap();
        };
        let (seen, ()) = tokio::join!(
            tokio::time::timeout(Duration::from_secs(5), watch.changed()),
            changed
        );
        assert!(seen.is_ok(), "the write was not seen");
        let next = dir.path().join("node.crt.new");
        std::fs::write(&next, "three").unwrap();
        // A modification time the first write may share to the second.
        let later = std::time::SystemTime::now() + Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&next)
            .unwrap()
            .set_modified(later)
            .unwrap();
        std::fs::rename(&next, &path).unwrap();
        let seen = tokio::time::timeout(Duration::from_secs(5), watch.changed()).await;
        assert!(seen.is_ok(), "the rename was not seen");
    }
}
