//! The node behind the web fronts and the dials of camouflage mode (see
//! [`crate::camouflage::Members`]): its proofs, its checks of its peers' proofs, and
//! sessions for the links that come of them.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Result;
use quicap_pki::cert::VerifiedCert;
use tracing::warn;

use super::{session, Node};
use crate::camouflage::auth::{self, Exporter, Refused};
use crate::camouflage::Members;
use crate::link::Link;
use crate::relay::RelayTable;

pub(super) struct NodeMembers(pub Arc<Node>);

impl Members for NodeMembers {
    fn prove(&self, session: &dyn Exporter, authority: &str, realm: &str) -> Result<String> {
        let (cert, key) = self.0.own_key();
        auth::prove(session, &key, &cert, &auth::origin(authority, realm))
    }

    fn check(
        &self,
        session: &dyn Exporter,
        authority: &str,
        realm: &str,
        header: &[u8],
    ) -> Result<VerifiedCert, Refused> {
        let trust = self.0.trust();
        auth::check(
            session,
            header,
            &auth::origin(authority, realm),
            (&trust.ca, trust.crl.as_ref()),
            time::OffsetDateTime::now_utc(),
        )
    }

    fn refused(&self, remote: SocketAddr, why: &Refused) {
        if let Some(refused) = self.0.refusals.after_handshake(remote) {
            warn!(%remote, reason = %why, refused, "refused a node's proof of identity (answered as the web site)");
        }
    }

    fn open(&self, link: Link) {
        tokio::spawn(session::run(self.0.clone(), link, false, None));
    }

    fn relays(&self) -> Arc<RelayTable> {
        self.0.relays.clone()
    }

    fn masque(&self) -> Option<Arc<Node>> {
        self.0.masque.as_ref().map(|_| self.0.clone())
    }
}
